"""Modality Worklist (PS3.4 K.6): matching rules, what is pushed into the FHIR search, paging,
and the whole path with dcmtk's ``findscu -W`` and pynetdicom as the modality."""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from sonobridge.core.orders import WORKLIST_PAGE
from sonobridge.hie.dimse import matching, worklist
from sonobridge.hie.dimse.find import FindError
from sonobridge.mappings.worklist import (
    AE_TITLE_TYPE,
    DICOM_IDENTIFIER_TYPE,
    ItemContext,
    item,
    local_date_time,
)
from tests.live import free_port, needs_dcmtk, serve

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


# ------------------------------------------------------------------------ matching rules

def test_unknown_values_fail_every_key_but_universal_and_a_lone_star():
    assert matching.text("", "") and matching.text("*", "")
    assert not matching.text("OTHER_US", "") and not matching.text("US*", "")
    assert matching.any_value("CART1", ["CART2", "CART1"])
    assert not matching.any_value("CART3", ["CART2", "CART1"])
    assert not matching.any_value("CART?", [])


def test_wildcards_are_star_and_question_mark_only():
    assert matching.text("AB?D*", "ABCDEF")
    assert not matching.text("[A]*", "A1") and matching.text("[A]*", "[A]1")
    assert not matching.text("acc*", "ACC1")  # case matters outside person names


def test_person_names_any_case_any_component_group():
    assert matching.person_name("zhang^wei", "Zhang^Wei")
    assert matching.person_name("王*", "Wang^Wei=王^伟")
    assert matching.person_name("=王^伟", "Wang^Wei=王^伟")
    assert not matching.person_name("Wang^Wei=李*", "Wang^Wei=王^伟")
    assert matching.person_name("Doe^Jane^^^", "Doe^Jane")
    assert not matching.person_name("Zhang", "Zhang^Wei")  # single value is literal


def test_date_and_time_ranges():
    assert matching.date("20250101-20250131", "20250115")
    assert matching.date("-20250101", "20241231") and not matching.date("20250102-", "20250101")
    assert matching.time("1000-1200", "115959") and not matching.time("1000-1200", "120100")
    assert matching.time("12", "125959.5")  # a key covers its whole precision
    with pytest.raises(matching.MatchError):
        matching.date_bounds("2025-01")


def test_date_and_time_ranges_together_are_one_datetime_range():
    # 1 Jan 10:00 to 2 Jan 14:00: 2 Jan 09:00 is inside, though 09:00 is not in 10:00-14:00
    assert matching.date_time("20250101-20250102", "1000-1400", "20250102", "090000")
    assert not matching.date_time("20250101-20250102", "1000-1400", "20250101", "090000")
    assert not matching.date_time("20250101-20250102", "1000-1400", "20250102", "150000")
    # a single date with a time range: each matched on its own
    assert not matching.date_time("20250102", "1000-1400", "20250102", "090000")
    assert matching.date_time("20250102", "1000-1400", "20250102", "100000")


# ------------------------------------------------------------------------------ mapping

def _ae(value: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": DICOM_IDENTIFIER_TYPE, "code": AE_TITLE_TYPE}]},
            "value": value}


def test_item_from_an_order_with_a_device_and_a_practitioner():
    order = {"resourceType": "ServiceRequest", "id": "o1", "status": "active",
             "identifier": [{"system": "urn:x", "value": "A1",
                             "type": {"coding": [{"system": V2, "code": "ACSN"}]}}],
             "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9",
                                  "display": "US Abdomen"},
                                 {"system": "urn:local", "code": "X" * 20}]},
             "category": [{"coding": [{"system": DCM, "code": "US"}]}],
             "priority": "stat", "occurrenceDateTime": "2025-03-01T02:30:00Z"}
    device = {"resourceType": "Device", "id": "d", "identifier": [_ae("CART_A")],
              "deviceName": [{"name": "Cart A", "type": "user-friendly-name"}]}
    doctor = {"resourceType": "Practitioner", "id": "p", "name": [{"family": "李",
                                                                  "given": ["明"]}]}
    patient = {"resourceType": "Patient", "id": "pt", "identifier": [
        {"system": "urn:sonobridge:hl7:id:HOSP", "value": "MRN1",
         "type": {"coding": [{"system": V2, "code": "MR"}]}}],
        "name": [{"family": "Wang", "given": ["Wei"]}, {"family": "王", "given": ["伟"]}]}
    ds = item(order, ItemContext(patient=patient, performers=[device, doctor], zone="+08:00",
                                 stations={"US": ("DEFAULT",)}))
    step = ds.ScheduledProcedureStepSequence[0]
    assert step.ScheduledStationAETitle == "CART_A" and step.ScheduledStationName == "Cart A"
    assert step.ScheduledProcedureStepStartDate == "20250301"
    assert step.ScheduledProcedureStepStartTime == "103000"  # 02:30 UTC in +08:00
    assert str(step.ScheduledPerformingPhysicianName) == "李^明"
    assert str(ds.PatientName) == "Wang^Wei=王^伟"
    assert ds.PatientID == "MRN1" and ds.IssuerOfPatientID == "HOSP"
    assert ds.RequestedProcedurePriority == "STAT"
    requested = ds.RequestedProcedureCodeSequence
    assert len(requested) == 1 and requested[0].CodeValue == "24558-9"
    assert requested[0].CodingSchemeDesignator == "LN"
    protocol = step.ScheduledProtocolCodeSequence
    assert [p.CodingSchemeDesignator for p in protocol] == ["LN", "99LOCAL"]
    assert protocol[1].LongCodeValue == "X" * 20 and "CodeValue" not in protocol[1]


def test_item_falls_back_to_the_stations_of_the_modality():
    order = {"resourceType": "ServiceRequest", "id": "o2", "status": "active",
             "category": [{"coding": [{"system": DCM, "code": "US"}]}]}
    ds = item(order, ItemContext(patient={}, stations={"US": ("CART1", "CART2")}))
    assert list(ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == \
        ["CART1", "CART2"]
    none = item(order, ItemContext(patient={}))
    assert not none.ScheduledProcedureStepSequence[0].ScheduledStationAETitle


def test_default_stations_setting():
    from sonobridge.config import ConfigError, Settings

    stations = Settings(dicom_worklist_stations="US=CART1, US=CART2,CT=CT1").worklist_stations
    assert stations == {"US": ("CART1", "CART2"), "CT": ("CT1",)}
    with pytest.raises(ConfigError, match="SONOBRIDGE_DICOM_WORKLIST_STATIONS"):
        Settings(dicom_worklist_stations="US")
    with pytest.raises(ConfigError):
        Settings(dicom_worklist_stations="US=" + "A" * 17)


def test_dates_without_a_time_or_a_day():
    assert local_date_time("2025-01-02", "+08:00") == ("20250102", "")
    assert local_date_time("2025-01", "+08:00") == ("", "")
    assert local_date_time("2025-01-01T20:00:00-05:00", "+08:00") == ("20250102", "090000")


# --------------------------------------------------------------- queries against the core

def _query(top: dict[str, Any] | None = None, step: dict[str, Any] | None = None) -> Dataset:
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "RequestedProcedureID"):
        setattr(ds, keyword, "")
    for keyword, value in (top or {}).items():
        setattr(ds, keyword, value)
    sps = Dataset()
    for keyword in ("ScheduledStationAETitle", "Modality", "ScheduledProcedureStepStartDate",
                    "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName"):
        setattr(sps, keyword, "")
    for keyword, value in (step or {}).items():
        setattr(sps, keyword, value)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def _order(res_id: str, patient: str, when: str, *, accession: str | None = None,
           modality: str | None = "US", performers: list[str] | None = None,
           status: str = "active") -> dict[str, Any]:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": res_id, "status": status, "intent": "order",
        "subject": {"reference": f"Patient/{patient}"}, "occurrenceDateTime": when,
        "identifier": [{"system": "urn:sonobridge:accession", "value": accession or res_id,
                        "type": {"coding": [{"system": V2, "code": "ACSN"}]}}],
        "code": {"coding": [{"system": "urn:sonobridge:hl7:procedure", "code": "US-ABD",
                             "display": "US ABDOMEN"}]}}
    if modality:
        order["category"] = [{"coding": [{"system": DCM, "code": modality}]}]
    if performers:
        order["performer"] = [{"reference": p} for p in performers]
    return order


@pytest.fixture
def world(core):
    with core.store.write() as w:
        w.update("Patient", "wang", {
            "resourceType": "Patient", "id": "wang", "identifier": [
                {"system": "urn:sonobridge:hl7:id:HOSP", "value": "MRN-1",
                 "type": {"coding": [{"system": V2, "code": "MR"}]}}],
            "name": [{"family": "Wang", "given": ["Wei"]}, {"family": "王", "given": ["伟"]}]})
        w.update("Patient", "doe", {"resourceType": "Patient", "id": "doe",
                                    "name": [{"family": "Doe", "given": ["Jane"]}]})
        w.update("Device", "cart-a", {"resourceType": "Device", "id": "cart-a",
                                      "identifier": [_ae("CART_A")]})
        w.update("Practitioner", "li", {"resourceType": "Practitioner", "id": "li",
                                        "name": [{"family": "Li", "given": ["Ming"]}]})
        w.update("ServiceRequest", "o1", _order("o1", "wang", "2025-01-01T10:00:00+08:00",
                                                performers=["Device/cart-a",
                                                            "Practitioner/li"]))
        w.update("ServiceRequest", "o2", _order("o2", "wang", "2025-01-02T09:00:00+08:00"))
        w.update("ServiceRequest", "o3", _order("o3", "doe", "2025-01-02T15:00:00+08:00",
                                                modality="CT"))
        w.update("ServiceRequest", "o4", _order("o4", "doe", "2025-01-03T10:00:00+08:00",
                                                modality=None))
        w.update("ServiceRequest", "o5", _order("o5", "doe", "2025-01-01T11:00:00+08:00",
                                                status="revoked"))
    return core


def _accessions(core, query: Dataset) -> list[str]:
    return sorted(str(ds.AccessionNumber) for ds in
                  worklist.worklist(core, core.server, worklist.parse(query)))


def test_station_ae_title_matches_the_device_or_nothing(world):
    assert _accessions(world, _query(step={"ScheduledStationAETitle": "CART_A"})) == ["o1"]
    assert _accessions(world, _query(step={"ScheduledStationAETitle": "OTHER_US"})) == []
    assert _accessions(world, _query(step={"ScheduledStationAETitle": "CART*"})) == ["o1"]
    assert _accessions(world, _query(step={"ScheduledStationAETitle": "*"})) == \
        ["o1", "o2", "o3", "o4"]  # o5 is revoked


def test_modality_patient_accession_physician(world):
    assert _accessions(world, _query(step={"Modality": "US"})) == ["o1", "o2", "o4"]
    assert _accessions(world, _query(step={"Modality": "CT"})) == ["o3"]
    assert _accessions(world, _query({"PatientID": "MRN-1"})) == ["o1", "o2"]
    assert _accessions(world, _query({"PatientID": "doe"})) == ["o3", "o4"]  # the id
    assert _accessions(world, _query({"PatientID": "MRN-*"})) == ["o1", "o2"]
    assert _accessions(world, _query({"PatientName": "王*"})) == ["o1", "o2"]
    assert _accessions(world, _query({"PatientName": "DOE^JANE"})) == ["o3", "o4"]
    assert _accessions(world, _query({"PatientName": "*ane"})) == ["o3", "o4"]
    assert _accessions(world, _query({"AccessionNumber": "o3"})) == ["o3"]
    assert _accessions(world, _query({"RequestedProcedureID": "o2"})) == ["o2"]
    assert _accessions(world, _query(step={"ScheduledPerformingPhysicianName": "li*"})) == \
        ["o1"]


def test_scheduled_date_and_time(world):
    both = {"ScheduledProcedureStepStartDate": "20250101-20250102",
            "ScheduledProcedureStepStartTime": "1000-1400"}
    assert _accessions(world, _query(step=both)) == ["o1", "o2"]  # not o3 (15:00 on the 2nd)
    time_only = {"ScheduledProcedureStepStartTime": "1000-1400"}
    assert _accessions(world, _query(step=time_only)) == ["o1", "o4"]
    day = {"ScheduledProcedureStepStartDate": "20250102"}
    assert _accessions(world, _query(step=day)) == ["o2", "o3"]


def test_what_the_fhir_search_is_asked(world, monkeypatch):
    asked: list[list[tuple[str, str]]] = []
    search = world.search.search

    def spy(types, query, **kwargs):
        asked.append(list(query))
        return search(types, query, **kwargs)

    monkeypatch.setattr(world.search, "search", spy)
    query = _query({"PatientID": "MRN-1", "AccessionNumber": "o2", "PatientName": "Wang*"},
                   {"Modality": "CT", "ScheduledProcedureStepStartDate": "20250102"})
    assert _accessions(world, query) == []
    orders = next(q for q in asked if ("status", "active") in q)
    for param in [("identifier", "o2"), ("category", "CT"), ("subject:Patient.name", "Wang"),
                  ("occurrence", "ge2025-01-01"), ("occurrence", "le2025-01-03"),
                  ("subject", "Patient/wang")]:
        assert param in orders, param


def test_every_match_is_returned_across_pages(core):
    with core.store.write() as w:
        w.update("Patient", "many", {"resourceType": "Patient", "id": "many"})
        for n in range(WORKLIST_PAGE * 2 + 5):
            w.update("ServiceRequest", f"m{n}", _order(f"m{n}", "many",
                                                       "2025-02-01T08:00:00+08:00"))
    assert len(_accessions(core, _query({"PatientID": "many"}))) == WORKLIST_PAGE * 2 + 5


def test_unsupported_keys_are_flagged_and_bad_ranges_refused(world):
    query = worklist.parse(_query({"PatientComments": "x", "PatientName": "Doe*"},
                                  {"ScheduledProcedureStepLocation": "ROOM 1"}))
    assert query.status == 0xFF01
    assert query.unsupported == ["PatientComments",
                                 "ScheduledProcedureStepSequence>ScheduledProcedureStepLocation"]
    found = worklist.worklist(world, world.server, query)
    assert sorted(str(ds.AccessionNumber) for ds in found) == ["o3", "o4"]
    assert worklist.parse(_query({"PatientName": "Doe*"})).status == 0xFF00
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        bad = _query(step={"ScheduledProcedureStepStartDate": "2025-01-01"})
    with pytest.raises(FindError) as refused:
        worklist.parse(bad)
    assert refused.value.status == 0xA900


def test_responses_carry_the_keys_asked_for_inside_sequences(world):
    query = _query({"AccessionNumber": "o1"})
    query.RequestedProcedureCodeSequence = []
    (ds,) = worklist.worklist(world, world.server, worklist.parse(query))
    step = ds.ScheduledProcedureStepSequence[0]
    assert {e.keyword for e in step} == {
        "ScheduledStationAETitle", "Modality", "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName"}
    assert ds.RequestedProcedureCodeSequence[0].CodeValue == "US-ABD"
    assert ds.RequestedProcedureCodeSequence[0].CodingSchemeDesignator == "99LOCAL"


# ------------------------------------------------------------- a modality over the network



class Ris:
    def __init__(self, base: str, port: int, mllp: int, work: Path) -> None:
        self.base, self.port, self.mllp, self.work = base, port, mllp, work

    def put(self, resource: dict[str, Any]) -> None:
        r = httpx.put(f"{self.base}/fhir/{resource['resourceType']}/{resource['id']}",
                      json=resource, timeout=30)
        assert r.status_code in (200, 201), r.text

    def findscu(self, *keys: str) -> list[Dataset]:
        out = self.work / f"wl-{time.monotonic_ns()}"
        out.mkdir()
        args = ["findscu", "-W", "-X", "-od", str(out), "-aec", "SONOBRIDGE"]
        for key in keys:
            args += ["-k", key]
        result = subprocess.run([*args, "127.0.0.1", str(self.port)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr + result.stdout
        return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture(scope="module")
def ris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ris]:
    work = tmp_path_factory.mktemp("worklist")
    port, mllp = free_port(), free_port()
    with serve(f"sqlite:///{work / 'wl.db'}", work, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_MLLP_PORT=str(mllp),
               SONOBRIDGE_DICOM_WORKLIST_STATIONS="US=US_ROOM1") as (base, _log):
        world = Ris(base, port, mllp, work)
        world.put({"resourceType": "Patient", "id": "zhang", "identifier": [
            {"system": "urn:sonobridge:hl7:id:HOSP", "value": "WL-1",
             "type": {"coding": [{"system": V2, "code": "MR"}]}}],
            "name": [{"family": "张", "given": ["伟"]}]})
        world.put({"resourceType": "Device", "id": "cart-b", "identifier": [_ae("CART_B")]})
        world.put(_order("wl-a", "zhang", "2026-05-01T09:30:00+08:00",
                         performers=["Device/cart-b"]))
        world.put(_order("wl-b", "zhang", "2026-05-02T16:00:00+08:00"))
        yield world


@needs_dcmtk
def test_findscu_station_date_time_and_codes(ris):
    keys = ["PatientName", "PatientID", "AccessionNumber", "RequestedProcedureCodeSequence",
            "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence"]
    mine = ris.findscu(*keys, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CART_B")
    assert [str(d.AccessionNumber) for d in mine] == ["wl-a"]
    assert mine[0].RequestedProcedureCodeSequence[0].CodeValue == "US-ABD"
    assert mine[0].ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0] \
        .CodeMeaning == "US ABDOMEN"
    room = ris.findscu(*keys, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=US_ROOM1")
    assert [str(d.AccessionNumber) for d in room] == ["wl-b"]  # the modality's default
    assert ris.findscu("AccessionNumber",
                       "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=OTHER_US") == []
    window = ris.findscu(
        "AccessionNumber",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260501-20260502",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime=0900-1200")
    assert [str(d.AccessionNumber) for d in window] == ["wl-a"]


@needs_dcmtk
def test_findscu_chinese_name(ris):
    found = ris.findscu("SpecificCharacterSet=ISO_IR 192", "PatientName=张*", "AccessionNumber")
    assert sorted(str(d.AccessionNumber) for d in found) == ["wl-a", "wl-b"]
    assert all(str(d.PatientName) == "张^伟" for d in found)


def _pynetdicom_find(port: int, query: Dataset) -> list[tuple[int, Dataset | None]]:
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    try:
        return [(status.Status, ds) for status, ds in
                assoc.send_c_find(query, ModalityWorklistInformationFind)]
    finally:
        assoc.release()


def test_gb18030_query_and_unsupported_key_status(ris):
    query = _query({"PatientName": "张^伟", "PatientComments": "anything"})
    query.SpecificCharacterSet = "GB18030"
    answers = _pynetdicom_find(ris.port, query)
    pending = [(status, ds) for status, ds in answers if ds is not None]
    assert {status for status, _ in pending} == {0xFF01}
    assert sorted(str(ds.AccessionNumber) for _, ds in pending) == ["wl-a", "wl-b"]
    assert answers[-1][0] == 0x0000
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        bad = _query(step={"ScheduledProcedureStepStartDate": "yesterday"})
    assert _pynetdicom_find(ris.port, bad)[-1][0] == 0xA900


@needs_dcmtk
def test_a_cancelled_order_leaves_the_worklist(ris):
    from hl7.client import MLLPClient

    head = "MSH|^~\\&|RIS|HOSP|USSRV|TELEUS|20260501||ORM^O01|{id}|P|2.3\r" \
           "PID|1||WL-2^^^HOSP^MR||Zhao^Lei\r"
    order = "ORC|{control}|P-WL2|ACC-WL2||SC\rOBR|1|P-WL2|ACC-WL2|US-ABD^US ABDOMEN^L\r"
    with MLLPClient("127.0.0.1", ris.mllp) as client:
        ack = client.send_message(head.format(id="WL-NW") + order.format(control="NW"))
    assert b"MSA|AA" in ack
    assert [str(d.AccessionNumber) for d in ris.findscu("AccessionNumber=ACC-WL2")] == \
        ["ACC-WL2"]
    with MLLPClient("127.0.0.1", ris.mllp) as client:
        ack = client.send_message(head.format(id="WL-CA") + order.format(control="CA"))
    assert b"MSA|AA" in ack
    assert ris.findscu("AccessionNumber=ACC-WL2") == []


@needs_dcmtk
def test_an_omi_station_and_loinc_code_reach_the_worklist(ris):
    """OMI^O23 IPC-9/IPC-7 (scheduled station AE title and name) become the order's performer
    Device; OBR-4.3 LN keeps the code in LOINC: the modality sees both."""
    from hl7.client import MLLPClient

    omi = ("MSH|^~\\&|RIS|HOSP|USSRV|TELEUS|20260601||OMI^O23^OMI_O23|WL-OMI|P|2.5.1\r"
           "PID|1||WL-3^^^HOSP^MR||Qin^Hao\rORC|NW|P-WL3|ACC-WL3||SC\r"
           "TQ1|1||||||20260601100000\r"
           "OBR|1|P-WL3|ACC-WL3|24558-9^US Abdomen^LN\r"
           "IPC|ACC-WL3|RP-WL3|1.2.826.0.1.3680043.8.498.77|SPS-WL3|US||CART 9|US2|CART_9\r")
    with MLLPClient("127.0.0.1", ris.mllp) as client:
        assert b"MSA|AA" in client.send_message(omi)
    keys = ["AccessionNumber", "RequestedProcedureCodeSequence",
            "ScheduledProcedureStepSequence[0].ScheduledStationName"]
    found = ris.findscu(*keys,
                        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CART_9")
    assert [str(d.AccessionNumber) for d in found] == ["ACC-WL3"]
    code = found[0].RequestedProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("24558-9", "LN")
    assert found[0].ScheduledProcedureStepSequence[0].ScheduledStationName == "CART 9"
    assert "ACC-WL3" not in [str(d.AccessionNumber) for d in ris.findscu(
        "AccessionNumber", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=US_ROOM1")]
    # a second order for the same station names the same Device
    with MLLPClient("127.0.0.1", ris.mllp) as client:
        assert b"MSA|AA" in client.send_message(
            omi.replace("WL-OMI", "WL-OMI2").replace("WL3", "WL4"))
    devices = httpx.get(f"{ris.base}/fhir/Device", params={"identifier": "CART_9"},
                        timeout=30).json()
    assert len(devices.get("entry", [])) == 1


@pytest.mark.parametrize("key,value", [
    ("ScheduledProcedureStepStartDate", "20251340"),
    ("ScheduledProcedureStepStartDate", "20250229-"),  # 2025 is no leap year
    ("ScheduledProcedureStepStartTime", "2561"), ("ScheduledProcedureStepStartTime", "1275")])
def test_impossible_dates_and_times_are_refused_not_crashed_on(key, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the value too
        query = _query(step={key: value})
    with pytest.raises(FindError) as err:
        worklist.parse(query)
    assert err.value.status == 0xA900
