"""Results out: a final report for an ordered study becomes an ORU^R01, queued with the change
and delivered over MLLP to the HIS, with retry; the queue survives a restart."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from sonobridge.app.compose import open_app_core as open_core
from sonobridge.config import ConfigError, Settings
from sonobridge.core.policy import Caller, Policy
from sonobridge.hie.mllp.outbound import (
    Destination,
    OutboxSender,
    load_destinations,
    parse_destinations,
    status,
)
from sonobridge.store.tables import hl7_messages as M
from tests.live import free_port

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


class FakeHis:
    """A HIS that records what it receives and answers with a chosen ACK code."""

    def __init__(self, port: int, code: str = "AA", codec: str = "utf-8") -> None:
        self.port, self.code, self.codec = port, code, codec
        self.received: list[str] = []
        self.raw: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\x1c\r"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.raw.append(data.strip(b"\x0b\x1c\r"))
                text = self.raw[-1].decode(self.codec)
                self.received.append(text)
                control = text.split("\r")[0].split("|")[9]
                ack = f"MSH|^~\\&|HIS||SONOBRIDGE||20261127||ACK|A1|P|2.5.1\rMSA|{self.code}|" \
                      f"{control}|{'bad' if self.code != 'AA' else ''}\r"
                conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def setup(db_url: str, tmp_path: Path, port: int) -> Iterator[tuple]:
    settings = Settings(data_dir=tmp_path, database_url=db_url, auth="disabled", audit=False,
                        hl7_destinations=f"HIS@127.0.0.1:{port}")
    core = open_core(settings, run_migrations=False)
    put = _putter(core)
    put({"resourceType": "Patient", "id": "p1", "name": [{"family": "张", "given": ["伟"]}],
         "gender": "male", "birthDate": "1985-03-15", "identifier": [
             {"system": "urn:sonobridge:hl7:id:COUNTY", "value": "MR-1",
              "type": {"coding": [{"system": V2, "code": "MR"}]}}]})
    put({"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p1"},
         "code": {"coding": [{"system": "urn:x", "code": "US-ABD", "display": "US ABD"}]},
         "identifier": [{"system": "urn:p", "value": "P-1",
                         "type": {"coding": [{"system": V2, "code": "PLAC"}]}},
                        {"system": "urn:f", "value": "F-1",
                         "type": {"coding": [{"system": V2, "code": "FILL"}]}}]})
    put({"resourceType": "Observation", "id": "o1", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "11348-0",
                              "display": "liver length"}]},
         "subject": {"reference": "Patient/p1"},
         "valueQuantity": {"value": 14.5, "unit": "cm", "code": "cm",
                           "system": "http://unitsofmeasure.org"}})
    yield core, put, settings
    core.close()


def _putter(core):
    def put(resource: dict) -> None:
        core.resources.update(Caller(Policy.open(), "http://sono.test/fhir"),
                              resource["resourceType"], resource["id"], resource)
    return put


def report(status: str, conclusion: str = "肝脏大小正常。No focal lesion.") -> dict:
    return {"resourceType": "DiagnosticReport", "id": "dr1", "status": status,
            "code": {"text": "US abdomen report"}, "subject": {"reference": "Patient/p1"},
            "basedOn": [{"reference": "ServiceRequest/sr1"}], "conclusion": conclusion,
            "issued": "2026-11-27T10:00:00+08:00", "result": [{"reference": "Observation/o1"}]}


def test_final_report_goes_out_as_oru(setup, port):
    core, put, _ = setup
    his = FakeHis(port)
    try:
        put(report("preliminary"))
        sender = OutboxSender(core)
        assert sender.send_due() == 0  # nothing for a preliminary report
        put(report("final"))
        assert sender.send_due() == 1
    finally:
        his.close()
    assert len(his.received) == 1
    segments = {s.split("|")[0]: s.split("|") for s in his.received[0].split("\r") if s}
    msh = segments["MSH"]
    assert msh[8] == "ORU^R01^ORU_R01" and msh[17] == "UNICODE UTF-8" and msh[4] == "HIS"
    assert segments["PID"][3] == "MR-1^^^COUNTY^MR" and segments["PID"][5] == "张^伟"
    obr = segments["OBR"]
    assert obr[2] == "P-1" and obr[3] == "F-1" and obr[25] == "F"
    obx = [s.split("|") for s in his.received[0].split("\r") if s.startswith("OBX")]
    assert obx[0][2] == "TX" and obx[0][5] == "肝脏大小正常。No focal lesion."
    # the report's code has no coding: OBX-3 still identifies the observation
    assert obx[0][3] == "18782-3^Radiology Study observation (narrative)^LN"
    assert obx[1][2] == "NM" and obx[1][5] == "14.5" and obx[1][6] == "cm^cm^UCUM"
    assert obx[1][3] == "11348-0^liver length^LN"
    counts = {(d, s): n for d, s, n in status(core)["counts"]}
    assert counts[("out", "sent")] == 1


def test_amended_report_is_sent_again_as_a_correction(setup, port):
    core, put, _ = setup
    his = FakeHis(port)
    try:
        put(report("final"))
        put(report("amended", "Amended: small cyst."))
        assert OutboxSender(core).send_due() == 2
    finally:
        his.close()
    assert [m.split("\r")[3].split("|")[25] for m in his.received] == ["F", "C"]


def test_a_final_report_corrected_is_sent_as_a_correction(setup, port):
    """The HIS has an F result; the report corrected (R4: a final report changes only as
    corrected/amended, never in place) goes out as a correction C, not a second F (which many
    HIS file as a duplicate)."""
    from sonobridge.core.errors import CoreError

    core, put, _ = setup
    his = FakeHis(port)
    try:
        sender = OutboxSender(core)
        put(report("final"))
        assert sender.send_due() == 1  # delivered before the report changes
        with pytest.raises(CoreError) as refused:  # changed in place: refused, nothing sent
            put(report("final", "肝脏大小正常。Small simple cyst, 4 mm."))
        assert refused.value.status == 409
        put(report("corrected", "肝脏大小正常。Small simple cyst, 4 mm."))
        put(report("corrected", "肝脏大小正常。Small simple cyst, 4 mm."))  # unchanged: none
        assert sender.send_due() == 1
    finally:
        his.close()
    results = [m.split("\r")[3].split("|")[25] for m in his.received]
    assert results == ["F", "C"]
    assert "4 mm" in his.received[1]


def test_unreachable_his_is_retried_with_backoff_and_survives_a_restart(setup, port):
    core, put, settings = setup
    put(report("final"))
    sender = OutboxSender(core, timeout=2)
    assert sender.send_due() == 1  # refused: nobody listens
    first = status(core)
    assert first["problems"][0]["attempts"] == 1
    assert "ConnectionRefused" in first["problems"][0]["error"]
    assert sender.send_due() == 0  # not due yet (5 s backoff)
    core.close()
    restarted = open_core(settings, run_migrations=False)
    try:
        with restarted.engine.begin() as conn:  # time passes
            conn.execute(update(M).where(M.c.direction == "out").values(next_attempt=0))
        his = FakeHis(port)
        try:
            assert OutboxSender(restarted).send_due() == 1
        finally:
            his.close()
        assert len(his.received) == 1
        counts = {(d, s): n for d, s, n in status(restarted)["counts"]}
        assert counts[("out", "sent")] == 1
    finally:
        restarted.close()


def test_an_error_ack_is_kept_as_failed(setup, port):
    core, put, _ = setup
    his = FakeHis(port, code="AE")
    try:
        put(report("final"))
        OutboxSender(core).send_due()
    finally:
        his.close()
    problem = status(core)["problems"][0]
    assert problem["direction"] == "out" and problem["error"].startswith("AE")


def test_a_reject_ack_is_retried_then_given_up(setup, port):
    """AR: the HIS could not take it now; the same message is offered again, then failed."""
    from sonobridge.hie.mllp.outbound import REJECT_ATTEMPTS

    core, put, _ = setup
    his = FakeHis(port, code="AR")
    try:
        put(report("final"))
        sender = OutboxSender(core)
        for attempt in range(1, REJECT_ATTEMPTS + 1):
            with core.engine.begin() as conn:  # time passes
                conn.execute(update(M).where(M.c.direction == "out").values(next_attempt=0))
            assert sender.send_due() == 1
            counts = {(d, s): n for d, s, n in status(core)["counts"]}
            expected = "retry" if attempt < REJECT_ATTEMPTS else "failed"
            assert counts.get(("out", expected)) == 1, (attempt, counts)
        his.code = "AA"
        with core.engine.begin() as conn:
            conn.execute(update(M).where(M.c.direction == "out").values(next_attempt=0))
        assert sender.send_due() == 0  # given up: not offered again
    finally:
        his.close()
    assert len(his.received) == REJECT_ATTEMPTS
    assert len({m.split("\r")[0].split("|")[9] for m in his.received}) == 1  # same message


def test_report_without_order_sends_nothing(setup, port):
    core, put, _ = setup
    lone = {**report("final"), "id": "dr2"}
    del lone["basedOn"]
    put(lone)
    assert OutboxSender(core).send_due() == 0


def test_hl7_messages_are_audited(db_url, tmp_path):
    from sonobridge.hie.mllp.inbound import Inbound

    core = open_core(Settings(data_dir=tmp_path, database_url=db_url, auth="disabled"),
                     run_migrations=False)
    try:
        fixture = Path(__file__).parents[2] / "fixtures" / "hl7" / "orm_o01.hl7"
        assert b"MSA|AA" in Inbound(core).handle(fixture.read_bytes(), "10.0.0.9:5000")
        assert b"MSA|AR" in Inbound(core).handle(
            b"MSH|^~\\&|A|B|C|D|1||ZZZ^Z01|Z1|P|2.5\r", "10.0.0.9:5001")
        core.audit.flush()
        result = core.search.search(["AuditEvent"], [("type", "110107")], base="",
                                    link_path="AuditEvent")
        events = [_json(e) for e in result.bundle.get("entry", [])]
        assert sorted(e["outcome"] for e in events) == ["0", "4"]
        applied = next(e for e in events if e["outcome"] == "0")
        assert applied["agent"][0]["network"]["address"] == "10.0.0.9"
        assert "MSH-10 MSG00001" in applied["outcomeDesc"]
        # one Import event names what the message changed: the patient and the order...
        order = core.search.search(["ServiceRequest"], [("identifier", "ACC0001")], base="",
                                   link_path="ServiceRequest").bundle["entry"][0]
        order = _json(order)
        entities = {e["what"]["reference"] for e in applied["entity"]}
        assert entities == {order["subject"]["reference"], f"ServiceRequest/{order['id']}"}
        # ...instead of one more event per resource it wrote
        rest = core.search.search(["AuditEvent"], [("type", "rest")], base="",
                                  link_path="AuditEvent")
        assert rest.bundle.get("entry", []) == []
    finally:
        core.close()


def test_an_hl7_merge_audits_every_resource_it_rewrites(db_url, tmp_path):
    from sonobridge.hie.mllp.inbound import Inbound

    core = open_core(Settings(data_dir=tmp_path, database_url=db_url, auth="disabled"),
                     run_migrations=False)
    msh = "MSH|^~\\&|HIS|COUNTY|USSRV|TELEUS|20261127||{}|{}|P|2.5.1\r"
    try:
        inbound = Inbound(core)
        for kind, control, rest in (
                ("ORM^O01", "G1", "PID|1||OLD-7^^^COUNTY^MR||Sun^Li\rORC|NW|P7|F7||SC\r"
                                  "OBR|1|P7|F7|US-OB^US OB\r"),
                ("ADT^A04^ADT_A01", "G2", "PID|1||NEW-7^^^COUNTY^MR||Sun^Li\r"),
                ("ADT^A40^ADT_A39", "G3", "PID|1||NEW-7^^^COUNTY^MR||Sun^Li\r"
                                          "MRG|OLD-7^^^COUNTY^MR\r")):
            assert b"MSA|AA" in inbound.handle((msh.format(kind, control) + rest).encode(),
                                               "10.0.0.9:5000")
        core.audit.flush()
        rest_events = core.search.search(["AuditEvent"], [("type", "rest")], base="",
                                         link_path="AuditEvent")
        changed = {_json(e)["entity"][-1]["what"]["reference"].split("/")[0]
                   for e in rest_events.bundle.get("entry", [])}
        assert {"Patient", "ServiceRequest"} <= changed  # the order moved to the survivor
    finally:
        core.close()


def _json(entry: dict) -> dict:
    import orjson

    from sonobridge.jsonio import loads

    return loads(orjson.dumps(entry["resource"]))


def test_dicom_associations_are_audited(db_url, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from sonobridge.hie.dimse.scp import DimseServer

    port = free_port()
    core = open_core(Settings(data_dir=tmp_path, database_url=db_url, auth="disabled",
                              dicom_port=port, dicom_peers="CART1@127.0.0.1:1",
                              dicom_known_callers_only=True), run_migrations=False)
    server = DimseServer(core)
    server.start()
    try:
        for aet in ("CART1", "INTRUDER"):
            ae = AE(ae_title=aet)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
            if assoc.is_established:
                assoc.send_c_echo()
                assoc.release()
        core.audit.flush()
        result = core.search.search(["AuditEvent"], [("type", "110100")], base="",
                                    link_path="AuditEvent")
        events = {_json(e)["subtype"][0]["code"]: _json(e)
                  for e in result.bundle.get("entry", [])}
        assert events["accepted"]["outcome"] == "0"
        assert events["rejected"]["outcome"] == "4"
        assert "INTRUDER" in events["rejected"]["outcomeDesc"]
    finally:
        server.stop()
        core.close()


def test_chinese_names_round_trip_from_an_order_to_its_result(tmp_path):
    """ORM^O01 in GB 18030 over MLLP -> ServiceRequest and Patient -> a final report over FHIR
    -> ORU^R01 at the HIS with the same name and the order's numbers."""
    import time

    import httpx
    from hl7.client import MLLPClient

    from tests.live import serve

    his_port, mllp = free_port(), free_port()
    his = FakeHis(his_port, codec="gb18030")  # a HIS that speaks GB 18030 both ways
    try:
        with serve(f"sqlite:///{tmp_path / 'rt.db'}", tmp_path, "--no-sample",
                   SONOBRIDGE_MLLP_PORT=str(mllp),
                   SONOBRIDGE_HL7_DESTINATIONS=f"HIS@127.0.0.1:{his_port}:charset=GB18030"
                   ) as (base, _log):
            orm = ("MSH|^~\\&|HIS|COUNTY|USSRV|TELEUS|20261127093000||ORM^O01|RT1|P|2.3.1"
                   "||||||GB 18030\rPID|1||RT-MR-1^^^COUNTY^MR||欧阳^娜娜||19910203|F\r"
                   "ORC|NW|RT-P1|RT-F1||SC\rOBR|1|RT-P1|RT-F1|US-TH^甲状腺超声^L\r")
            with MLLPClient("127.0.0.1", mllp, encoding="gb18030") as client:
                ack = client.send_message(orm.encode("gb18030")).decode("gb18030")
            assert "MSA|AA|RT1" in ack
            order = httpx.get(f"{base}/fhir/ServiceRequest", params={"identifier": "RT-F1"},
                              timeout=30).json()["entry"][0]["resource"]
            r = httpx.post(f"{base}/fhir/DiagnosticReport", timeout=30, json={
                "resourceType": "DiagnosticReport", "status": "final",
                "code": {"text": "甲状腺超声报告"}, "subject": order["subject"],
                "basedOn": [{"reference": f"ServiceRequest/{order['id']}"}],
                "conclusion": "甲状腺大小形态正常。"})
            assert r.status_code == 201, r.text
            deadline = time.monotonic() + 20
            while not his.received and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        his.close()
    assert len(his.received) == 1
    segments = {s.split("|")[0]: s.split("|") for s in his.received[0].split("\r") if s}
    assert segments["PID"][5] == "欧阳^娜娜"
    assert segments["PID"][3] == "RT-MR-1^^^COUNTY^MR"
    assert segments["OBR"][2] == "RT-P1" and segments["OBR"][3] == "RT-F1"
    assert segments["OBR"][4].startswith("US-TH^甲状腺超声")
    assert "甲状腺大小形态正常。" in his.received[0]
    assert segments["MSH"][17] == "GB 18030-2000"
    with pytest.raises(UnicodeDecodeError):  # the bytes really are GB 18030, not UTF-8
        his.raw[0].decode("utf-8")


def test_destinations_and_their_character_sets():
    assert parse_destinations("HIS@10.0.0.7:2575, RIS@[::1]:2576:charset=GB 18030-2000,"
                              "OLD@h:1:charset=8859/1") == [
        Destination("HIS", "10.0.0.7", 2575, "utf-8"), Destination("RIS", "::1", 2576, "gb18030"),
        Destination("OLD", "h", 1, "latin-1")]
    for bad in ("HIS@h:1:charset=EBCDIC", "HIS@h:1:tls=on", "HIS@h", "HIS@h:x", "@h:1"):
        with pytest.raises(ConfigError):
            parse_destinations(bad)


def _core_for(db_url: str, tmp_path: Path, destinations: str):
    core = open_core(Settings(data_dir=tmp_path, database_url=db_url, auth="disabled",
                              audit=False, hl7_destinations=destinations), run_migrations=False)
    return core, _putter(core)


def _order_and_patient(put, family: str, given: str) -> None:
    put({"resourceType": "Patient", "id": "p1", "name": [{"family": family, "given": [given]}],
         "identifier": [{"system": "urn:sonobridge:hl7:id:COUNTY", "value": "MR-1",
                         "type": {"coding": [{"system": V2, "code": "MR"}]}}]})
    put({"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p1"}, "code": {"text": "US"}, "identifier": [
             {"system": "urn:f", "value": "F-1",
              "type": {"coding": [{"system": V2, "code": "FILL"}]}}]})


def test_a_latin_1_his_gets_latin_1(db_url, tmp_path, port):
    core, put = _core_for(db_url, tmp_path, f"OLD@127.0.0.1:{port}:charset=8859/1")
    his = FakeHis(port, codec="latin-1")
    try:
        _order_and_patient(put, "Müller", "Zoë")
        put(report("final", "Leber unauffällig."))
        assert OutboxSender(core).send_due() == 1
    finally:
        his.close()
        core.close()
    assert his.raw[0].split(b"\r")[0].endswith(b"|8859/1")
    assert "PID|1||MR-1^^^COUNTY^MR||Müller^Zoë" in his.received[0]
    assert b"Leber unauff\xe4llig." in his.raw[0]  # one byte, not UTF-8's two


def test_text_a_destination_cannot_carry_is_kept_as_failed_not_mangled(db_url, tmp_path, port):
    core, put = _core_for(db_url, tmp_path, f"OLD@127.0.0.1:{port}:charset=8859/1,"
                                            f"HIS@127.0.0.1:{port}")
    his = FakeHis(port, codec="utf-8")
    try:
        _order_and_patient(put, "张", "伟")
        put(report("final"))
        assert OutboxSender(core).send_due() == 1  # only the UTF-8 destination's is sent
        problems = status(core)["problems"]
    finally:
        his.close()
        core.close()
    assert len(his.received) == 1 and "张^伟" in his.received[0]
    [failed] = problems
    assert failed["destination"] == "OLD" and "8859/1 cannot carry" in failed["error"]
    assert "'张'" in failed["error"]


def test_two_senders_on_one_database_send_each_message_once(setup, port):
    """``serve`` and ``sonobridge mllp`` (or two hosts) share the queue: a message is claimed
    by one of them before it goes out."""
    core, put, settings = setup
    other = open_core(settings, run_migrations=False)
    his = FakeHis(port)
    try:
        for n in range(6):
            put({**report("final"), "id": f"dr-many-{n}"})
        senders = [OutboxSender(core), OutboxSender(other)]
        barrier = threading.Barrier(2)

        def run(sender: OutboxSender) -> None:
            barrier.wait()
            sender.send_due()

        threads = [threading.Thread(target=run, args=(s,)) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sum(s.send_due() for s in senders) == 0  # nothing left, nothing due again
    finally:
        his.close()
        other.close()
    controls = [m.split("\r")[0].split("|")[9] for m in his.received]
    assert len(controls) == 6 and len(set(controls)) == 6
    counts = {(d, s): n for d, s, n in status(core)["counts"]}
    assert counts[("out", "sent")] == 6


def test_destinations_from_a_file_as_well(db_url, tmp_path, port):
    """SONOBRIDGE_HL7_DESTINATIONS_FILE: one destination per line, # comments; results go to
    those as to the inline ones."""
    listed = tmp_path / "his.txt"
    listed.write_text(f"# the county HIS\nCOUNTY@127.0.0.1:{port}:charset=GB18030\n\n",
                      "utf-8")
    core = open_core(Settings(data_dir=tmp_path, database_url=db_url, auth="disabled",
                              audit=False, hl7_destinations_file=str(listed)),
                     run_migrations=False)
    his = FakeHis(port, codec="gb18030")
    try:
        assert core.settings.sends_results
        put = _putter(core)
        _order_and_patient(put, "欧阳", "娜娜")
        put(report("final"))
        assert OutboxSender(core).send_due() == 1
    finally:
        his.close()
        core.close()
    assert "欧阳^娜娜" in his.received[0] and "|COUNTY|" in his.received[0]
    (tmp_path / "gone.txt").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="cannot read the HL7 destinations file"):
        load_destinations(Settings(data_dir=tmp_path, hl7_destinations_file=str(
            tmp_path / "gone.txt")))
