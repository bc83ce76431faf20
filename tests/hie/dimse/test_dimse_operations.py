"""Operating the DIMSE bridge: ``sonobridge dimse`` run alone drains the forwarding queue,
routing rules by source AE and by SOP class, and the association metric."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from sqlalchemy import create_engine, select

from sonobridge.store.tables import dicom_forwards as F
from tests.dicom_data import cine
from tests.live import free_port, serve

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class StoreScp:
    """A storage SCP (a PACS, an archive) that records what it receives."""

    def __init__(self, aet: str, port: int) -> None:
        self.aet, self.port = aet, port
        self.received: set[str] = set()
        self._lock = threading.Lock()

    def _store(self, event: Any) -> int:
        with self._lock:
            self.received.add(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    @contextmanager
    def running(self) -> Iterator[StoreScp]:
        ae = AE(ae_title=self.aet)
        for sop_class in (US_MULTIFRAME, SECONDARY_CAPTURE):
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        server = ae.start_server(("127.0.0.1", self.port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self._store)])
        try:
            yield self
        finally:
            server.shutdown()


def _image(sop_class: str) -> Dataset:
    ds = cine("native", frames=1, study=generate_uid())
    if sop_class == SECONDARY_CAPTURE:
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
        ds.Modality = "OT"
    return ds


def _send(port: int, calling: str, *images: Dataset) -> None:
    ae = AE(ae_title=calling)
    for sop_class in (US_MULTIFRAME, SECONDARY_CAPTURE):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    for image in images:
        assert assoc.send_c_store(image).Status == 0x0000
    assoc.release()


@contextmanager
def dimse_alone(work: Path, port: int, **env: str) -> Iterator[subprocess.Popen]:
    environ = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
               "SONOBRIDGE_DATABASE_URL": f"sqlite:///{work / 'dimse.db'}",
               "SONOBRIDGE_AUDIT": "off", "SONOBRIDGE_DICOM_PORT": str(port), **env}
    with (work / "dimse.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sonobridge", "dimse"], env=environ,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            ae = AE(ae_title="PROBE")
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
            if assoc.is_established:
                assoc.release()
                break
            assert proc.poll() is None and time.monotonic() < deadline, \
                (work / "dimse.log").read_text()
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dimse_alone_forwards_by_source_ae_and_by_sop_class(tmp_path):
    port = free_port()
    pacs, archive = StoreScp("PACS", free_port()), StoreScp("ARCHIVE", free_port())
    rules = f"PACS:source=CART*;ARCHIVE:sop_class={SECONDARY_CAPTURE}"
    cart_us, cart_sc = _image(US_MULTIFRAME), _image(SECONDARY_CAPTURE)
    ward_us, ward_sc = _image(US_MULTIFRAME), _image(SECONDARY_CAPTURE)
    with pacs.running(), archive.running(), dimse_alone(
            tmp_path, port, SONOBRIDGE_DICOM_FORWARD=rules,
            SONOBRIDGE_DICOM_PEERS=f"PACS@127.0.0.1:{pacs.port},"
                                   f"ARCHIVE@127.0.0.1:{archive.port}"):
        _send(port, "CART7", cart_us, cart_sc)
        _send(port, "WARD2", ward_us, ward_sc)
        deadline = time.monotonic() + 30
        while len(pacs.received) < 2 or len(archive.received) < 2:
            assert time.monotonic() < deadline, (pacs.received, archive.received)
            time.sleep(0.2)
        # The peer holds the image a moment before the sender records it as sent: wait for the
        # queue rows too, before stopping the process (a row left "sending" is retried after its
        # lease, which is right, but not what this test looks at).
        engine = create_engine(f"sqlite:///{tmp_path / 'dimse.db'}")
        while True:
            with engine.connect() as conn:
                queued = {(row.sop_uid, row.destination, row.status) for row in
                          conn.execute(select(F.c.sop_uid, F.c.destination, F.c.status))}
            if all(status == "sent" for *_, status in queued) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        engine.dispose()
    assert pacs.received == {cart_us.SOPInstanceUID, cart_sc.SOPInstanceUID}  # source=CART*
    assert archive.received == {cart_sc.SOPInstanceUID, ward_sc.SOPInstanceUID}  # SC only
    assert queued == {(cart_us.SOPInstanceUID, "PACS", "sent"),
                      (cart_sc.SOPInstanceUID, "PACS", "sent"),
                      (cart_sc.SOPInstanceUID, "ARCHIVE", "sent"),
                      (ward_sc.SOPInstanceUID, "ARCHIVE", "sent")}  # nothing for ward_us


def _associations(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^sonobridge_dimse_associations_total\{outcome="(\w+)"\} (\S+)$', text, re.M)}


def test_association_outcomes_are_counted(tmp_path):
    port = free_port()
    with serve(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY="true",
               SONOBRIDGE_DICOM_PEERS="MODALITY@127.0.0.1:1") as (base, _log):
        before = _associations(base)
        assert before == {"accepted": 0, "rejected": 0, "aborted": 0}
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
        aborted = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
        assert aborted.is_established
        aborted.abort()
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(Verification)
        assert stranger.associate("127.0.0.1", port, ae_title="SONOBRIDGE").is_rejected
        deadline = time.monotonic() + 10
        while (after := _associations(base)) != {"accepted": 2, "rejected": 1, "aborted": 1}:
            assert time.monotonic() < deadline, after
            time.sleep(0.1)


def _listener(tmp_path: Path, name: str, args: list[str], environ: dict[str, str]
              ) -> tuple[subprocess.Popen, int, int]:
    """A ``sonobridge`` listener with its --metrics-port, started on free ports: once again
    on new ones if it exits first (another test's server may take a port between our choosing
    it and the listener binding it). Returns the process, its port and its metrics port."""
    log = tmp_path / f"{name}.log"
    for _ in range(3):
        port, metrics = free_port(), free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sonobridge", *args, "--port",
                                     str(port), "--metrics-port", str(metrics)], env=environ,
                                    stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=2)
                return proc, port, metrics
            except httpx.HTTPError:
                time.sleep(0.2)
        proc.terminate()
        proc.wait(timeout=30)
    raise AssertionError(f"no metrics from {name}: {log.read_text()[-2000:]}")


def test_listeners_run_alone_serve_their_metrics(tmp_path):
    """``sonobridge dimse`` and ``sonobridge mllp`` without ``serve``: --metrics-port."""
    environ = {**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp_path / "data"),
               "SONOBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'dimse.db'}",
               "SONOBRIDGE_AUDIT": "off"}
    procs = []
    try:
        dimse, port, metrics = _listener(tmp_path, "dimse", ["dimse"], environ)
        procs.append(dimse)
        listener, mllp, mllp_metrics = _listener(tmp_path, "mllp", ["mllp"], environ)
        procs.append(listener)
        # Metrics answer before the core opens; the listeners come up after it.
        for service_port in (port, mllp):
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", service_port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nothing listens on {service_port}"
                    time.sleep(0.2)
        ae = AE(ae_title="PROBE")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
        assert assoc.is_established
        assoc.release()
        time.sleep(0.5)
        after = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert re.search(r'^sonobridge_dimse_associations_total\{outcome="accepted"\} [1-9]',
                         after, re.M), after
        from hl7.client import MLLPClient

        with MLLPClient("127.0.0.1", mllp) as client:
            ack = client.send_message("MSH|^~\\&|HIS|H|USSRV|T|20261201||ADT^A04^ADT_A01|M1|P|"
                                      "2.5.1\rPID|1||MX-1^^^H^MR||Alone^Mllp\r")
        assert b"MSA|AA" in ack
        hl7 = httpx.get(f"http://127.0.0.1:{mllp_metrics}/metrics", timeout=5).text
        assert 'sonobridge_hl7_messages_total{ack="AA",type="ADT_A04_ADT_A01"} 1.0' in hl7
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def test_two_forwarding_senders_on_one_database_send_each_object_once(tmp_path):
    """Two processes draining one queue (``serve`` and ``sonobridge dimse``, or two hosts):
    each queued object is claimed by one sender before it is sent."""
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.config import Settings
    from sonobridge.hie.dimse.forward import ForwardSender
    from tests.dicom_data import to_bytes

    pacs = StoreScp("PACS", free_port())
    counted: list[str] = []
    store = pacs._store

    def counting(event: Any) -> int:
        counted.append(str(event.request.AffectedSOPInstanceUID))
        return store(event)

    pacs._store = counting
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'f.db'}",
                        audit=False, auth="disabled", dicom_forward="PACS:modality=US",
                        dicom_peers=f"PACS@127.0.0.1:{pacs.port}")
    cores = [open_core(settings), open_core(settings)]
    try:
        ingest = cores[0].ingest
        images = [_image(US_MULTIFRAME) for _ in range(8)]
        for image in images:
            outcome = ingest.ingest(ingest.receiver.receive([to_bytes(image)]),
                                    cores[0].server, source="import")
            assert outcome.ok, outcome.message
        senders = [ForwardSender(core) for core in cores]
        barrier = threading.Barrier(2)

        def run(sender: ForwardSender) -> None:
            barrier.wait()
            sender.send_due()

        with pacs.running():
            threads = [threading.Thread(target=run, args=(s,)) for s in senders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert sum(s.send_due() for s in senders) == 0
    finally:
        for core in cores:
            core.close()
    assert sorted(counted) == sorted(str(i.SOPInstanceUID) for i in images)  # once each


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sonobridge", "mllp", "--port", str(free_port()),
             "--metrics-port", str(busy)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp_path / "data"),
                 "SONOBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
                 "SONOBRIDGE_AUDIT": "off", "COLUMNS": "200"})
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
