"""Storage Commitment (push model) with pynetdicom as the modality: the report on the same
association right after the N-ACTION response, and on a new association to a modality that is
down at first, delivered after a retry. Requests are stored before they are answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from sqlalchemy import create_engine, select

from sonobridge.hie.dimse import commitment
from sonobridge.store.tables import dicom_commitments as C
from tests.dicom_data import cine
from tests.live import free_port, serve

SC = commitment.STORAGE_COMMITMENT
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


class Archive:
    def __init__(self, port: int, scu_port: int, db: Path) -> None:
        self.port, self.scu_port = port, scu_port
        self.engine = create_engine(f"sqlite:///{db}")

    def rows(self, transaction: str) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(C).where(C.c.transaction_uid == transaction)).all()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, Dataset]]:
    work = tmp_path_factory.mktemp("commitment")
    port, scu_port = free_port(), free_port()
    with serve(f"sqlite:///{work / 'sc.db'}", work, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(port),
               SONOBRIDGE_DICOM_PEERS=f"COMMITSCU@127.0.0.1:{scu_port}") as (_base, _log):
        stored = cine("native", frames=1)
        ae = AE(ae_title="COMMITSCU")
        ae.add_requested_context(US_MULTIFRAME, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
        assert assoc.is_established and assoc.send_c_store(stored).Status == 0x0000
        assoc.release()
        world = Archive(port, scu_port, work / "sc.db")
        yield world, stored
        world.engine.dispose()


def _ask(world: Archive, stored: Dataset, on_report: Any) -> tuple[Any, Dataset]:
    """The modality asks for commitment of ``stored`` (and of one instance never sent), its
    reports handled by ``on_report``; returns the open association and the request."""
    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(SC)  # no role selection: the report is part of the SOP class
    assoc = ae.associate("127.0.0.1", world.port, ae_title="SONOBRIDGE",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    request = commitment_request(stored)
    status, _ = assoc.send_n_action(request, 1, SC, commitment.STORAGE_COMMITMENT_INSTANCE)
    assert status.Status == 0x0000
    return assoc, request


def commitment_request(stored: Dataset | None = None) -> Dataset:
    """An N-ACTION request naming ``stored`` (held) and an instance never sent (missing);
    without ``stored``, naming nothing."""
    request = Dataset()
    request.TransactionUID = generate_uid()
    request.ReferencedSOPSequence = []
    if stored is not None:
        held, missing = Dataset(), Dataset()
        held.ReferencedSOPClassUID = stored.SOPClassUID
        held.ReferencedSOPInstanceUID = stored.SOPInstanceUID
        missing.ReferencedSOPClassUID = stored.SOPClassUID
        missing.ReferencedSOPInstanceUID = generate_uid()
        request.ReferencedSOPSequence = [held, missing]
    return request


def _check(info: Dataset, request: Dataset, stored: Dataset) -> None:
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == \
        [stored.SOPInstanceUID]
    assert info.FailedSOPSequence[0].FailureReason == 0x0112


def test_report_on_the_same_association_after_the_response(archive):
    world, stored = archive
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        arrived.set()
        return 0x0000, None

    # A report sent before the response would reach pynetdicom where it waits for the
    # N-ACTION-RSP, and _ask would fail.
    assoc, request = _ask(world, stored, on_report)
    assert arrived.wait(10)
    assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # some failed
    _check(info, request, stored)
    deadline = time.monotonic() + 5
    while world.rows(request.TransactionUID)[0].status != "sent":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert world.rows(request.TransactionUID)[0].attempts == 1


class ModalityScp:
    """The modality's own Storage Commitment SCU listener, where reports come back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reports: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()
        self.server: Any = None

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((event.event_type, event.event_information))
        self.arrived.set()
        return 0x0000, None

    def __enter__(self) -> ModalityScp:
        ae = AE(ae_title="COMMITSCU")
        ae.add_supported_context(SC, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def _sent(world: Archive, transaction: str) -> Any:
    deadline = time.monotonic() + 5
    while (row := world.rows(transaction)[0]).status != "sent":
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    return row


def test_report_on_a_new_association_after_a_retry(archive):
    world, stored = archive
    refused = threading.Event()

    def refuse(event: Any) -> tuple[int, None]:
        refused.set()
        return 0x0110, None

    assoc, request = _ask(world, stored, refuse)
    assert refused.wait(10)  # offered here first, refused: it must come on a new association
    assoc.release()
    deadline = time.monotonic() + 10
    while True:  # the modality's SCP is not up yet: the first try fails
        rows = world.rows(request.TransactionUID)
        if rows and rows[0].status == "retry":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    assert rows[0].attempts == 1 and "no association" in rows[0].error
    with ModalityScp(world.scu_port) as scp:
        assert scp.arrived.wait(30)  # the retry is due 5 s after the first try
    event_type, info = scp.reports[0]
    assert event_type == 2
    _check(info, request, stored)
    row = _sent(world, request.TransactionUID)
    assert row.attempts == 2 and row.error is None


def test_a_delivery_is_owned_by_one_process_at_a_time(core):
    request = commitment_request()
    pending = commitment.accept(core, "NOBODY", request)
    sender = commitment.CommitmentSender(core, "SONOBRIDGE", {})
    assert sender.deliver_due() == 0  # the process that stored it is delivering it
    assert sender._claim(pending.id) is None
    sender._retry(pending, "test")
    with core.store.reader.connect() as conn:
        row = conn.execute(select(C).where(C.c.id == pending.id)).one()
    assert row.status == "retry" and row.attempts == 1 and row.error == "test"
    assert row.next_attempt > time.time_ns() // 1000 + 4_000_000
    with core.store.engine.begin() as conn:  # its time comes
        conn.execute(C.update().where(C.c.id == pending.id).values(next_attempt=0))
    claimed = sender._claim(pending.id)
    assert claimed is not None and claimed.status == "sending"
    assert sender._claim(pending.id) is None


def test_a_request_no_try_answers_for_a_day_is_failed(core):
    request = commitment_request()
    pending = commitment.accept(core, "GONE", request)  # a requester that is no known peer
    sender = commitment.CommitmentSender(core, "SONOBRIDGE", {})
    day = commitment.GIVE_UP_AFTER * 1_000_000
    with core.store.engine.begin() as conn:  # its lease is over, it was asked for 23 h ago
        conn.execute(C.update().where(C.c.id == pending.id).values(
            next_attempt=0, created=time.time_ns() // 1000 - day + 3600_000_000))
    assert sender.deliver_due() == 1
    with core.store.reader.connect() as conn:
        row = conn.execute(select(C).where(C.c.id == pending.id)).one()
    assert row.status == "retry" and "not a known peer" in row.error  # still tried
    with core.store.engine.begin() as conn:  # and now it is a day and more
        conn.execute(C.update().where(C.c.id == pending.id).values(
            next_attempt=0, created=time.time_ns() // 1000 - day - 1))
    assert sender.deliver_due() == 1
    with core.store.reader.connect() as conn:
        row = conn.execute(select(C).where(C.c.id == pending.id)).one()
    assert row.status == "failed" and row.attempts == 2
    assert row.error.startswith("no report delivered in 24 h; last: GONE closed")
    assert sender.deliver_due() == 0  # and no round takes it again


def test_a_round_delivers_what_a_stopped_process_left_behind(core):
    """A request stored by a process that stopped before delivering it: once its lease is
    over, any process's round sends the report on a new association."""
    from sonobridge.hie.dimse.peers import Peer

    request = Dataset()
    request.TransactionUID = generate_uid()
    missing = Dataset()
    missing.ReferencedSOPClassUID = US_MULTIFRAME
    missing.ReferencedSOPInstanceUID = generate_uid()
    request.ReferencedSOPSequence = [missing]
    pending = commitment.accept(core, "COMMITSCU", request)
    with core.store.engine.begin() as conn:
        conn.execute(C.update().where(C.c.id == pending.id).values(next_attempt=0))
    port = free_port()
    sender = commitment.CommitmentSender(core, "SONOBRIDGE",
                                         {"COMMITSCU": Peer("COMMITSCU", "127.0.0.1", port)})
    with ModalityScp(port) as scp:
        assert sender.deliver_due() == 1
        assert scp.arrived.wait(10)
    event_type, info = scp.reports[0]
    assert event_type == 2 and info.TransactionUID == request.TransactionUID
    assert info.FailedSOPSequence[0].FailureReason == 0x0112
    with core.store.reader.connect() as conn:
        assert conn.execute(select(C.c.status).where(C.c.id == pending.id)).scalar() == "sent"


def test_dicom_status_lists_both_queues_and_their_problems(core, settings):
    import subprocess
    import sys

    from sonobridge.store.tables import dicom_forwards as F

    now = time.time_ns() // 1000
    with core.store.engine.begin() as conn:
        conn.execute(F.insert(), [
            {"sop_uid": "2.25.1", "destination": "PACS", "status": "sent", "attempts": 1,
             "next_attempt": now, "created": now, "updated": now, "error": None},
            {"sop_uid": "2.25.2", "destination": "PACS", "status": "retry", "attempts": 3,
             "next_attempt": now, "created": now, "updated": now,
             "error": "no association with PACS@10.0.0.5:104"}])
        conn.execute(C.insert().values(
            transaction_uid="2.25.99", requester="GONE", items=b"[]", status="failed",
            attempts=9, next_attempt=0, created=now, updated=now,
            error="no report delivered in 24 h"))
    result = subprocess.run(
        [sys.executable, "-m", "sonobridge", "dicom", "status", "--data-dir",
         str(settings.data_dir), "--database-url", settings.database_url],
        capture_output=True, text=True, timeout=60, env={
            **__import__("os").environ, "COLUMNS": "200", "SONOBRIDGE_AUDIT": "off"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "forwarding" in out and "storage commitment" in out
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "PACS retry 1" in lines and "PACS sent 1" in lines and "GONE failed 1" in lines
    assert any("2.25.2" in line and "no association with PACS@10.0.0.5:104" in line
               for line in lines)
    assert any("2.25.99" in line and "no report delivered in 24 h" in line for line in lines)
