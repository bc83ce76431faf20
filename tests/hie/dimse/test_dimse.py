"""DICOM DIMSE against a live server, with dcmtk's tools as the peers (and pynetdicom where a
test needs to send what dcmtk will not)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.dicom_data import DATA, cine, to_bytes
from tests.live import free_port, needs_dcmtk, serve

FIXTURES = Path(__file__).parents[2] / "fixtures"
STUDY_JPEG, STUDY_NATIVE = "2.25.7001", "2.25.7002"
pytestmark = needs_dcmtk


class Pacs:
    def __init__(self, base: str, port: int, work: Path, store_port: int, mllp: int) -> None:
        self.base, self.port, self.work = base, port, work
        self.store_port, self.mllp = store_port, mllp

    def run(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)

    def dcm(self, tool: str, *args: str, aet: str | None = None, files: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
        extra = ["-aet", aet] if aet else []
        return self.run(tool, *extra, "-aec", "SONOBRIDGE", *args, "127.0.0.1",
                        str(self.port), *files)


def _dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 file, without preamble and file meta (what C-STORE sends)."""
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length:]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    work = tmp_path_factory.mktemp("dimse")
    port, store_port, mllp = free_port(), free_port(), free_port()
    files = work / "in"
    files.mkdir()
    jpeg = cine(frames=4, study=STUDY_JPEG, patient_id="PID-JPEG", patient_name="Zhang^Wei")
    native = cine("native", frames=2, study=STUDY_NATIVE, patient_id="PID-NATIVE",
                  patient_name="Li^Na")
    (files / "jpeg.dcm").write_bytes(to_bytes(jpeg))
    (files / "native.dcm").write_bytes(to_bytes(native))
    shutil.copy(DATA / "OBXXXX1A_rle.dcm", files / "rle.dcm")
    peers = ",".join([f"STORESCP@127.0.0.1:{store_port}", "STORESCU@127.0.0.1:1",
                      "ECHOSCU@127.0.0.1:1", "FINDSCU@127.0.0.1:1", "MOVESCU@127.0.0.1:1",
                      "GETSCU@127.0.0.1:1", "PYNETDICOM@127.0.0.1:1",
                      f"SONOBRIDGE@127.0.0.1:{port}"])
    with serve(f"sqlite:///{work / 'pacs.db'}", work, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_DICOM_PEERS=peers,
               SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY="true",
               SONOBRIDGE_MLLP_PORT=str(mllp)) as (base, _log):
        world = Pacs(base, port, work, store_port, mllp)
        result = world.dcm("storescu", "-xf", str(FIXTURES / "storescu-us.cfg"), "US",
                           files=(str(files / "jpeg.dcm"), str(files / "native.dcm"),
                                  str(files / "rle.dcm")))
        assert result.returncode == 0, result.stderr + result.stdout
        yield world


def test_echo(pacs):
    assert pacs.dcm("echoscu").returncode == 0


def test_unknown_caller_is_refused(pacs):
    result = pacs.dcm("echoscu", aet="INTRUDER")
    assert result.returncode != 0
    assert "reject" in (result.stdout + result.stderr).lower()


def test_stored_objects_are_retrievable_byte_exact(pacs):
    for name in ("jpeg.dcm", "native.dcm", "rle.dcm"):
        original = (pacs.work / "in" / name).read_bytes()
        ds = dcmread(pacs.work / "in" / name, stop_before_pixels=True)
        url = (f"{pacs.base}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
               f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
        r = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                              "transfer-syntax=*"}, timeout=60)
        assert r.status_code == 200, (name, r.text[:200])
        boundary = r.headers["content-type"].split("boundary=")[1].strip('"').encode()
        body = r.content.split(b"--" + boundary)[1]
        part = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        if name == "rle.dcm":
            # storescu re-encodes this file's undefined-length sequences before sending, so
            # what arrived differs from the file on disk; what arrived is what is stored.
            import io

            stored = dcmread(io.BytesIO(part))
            source = dcmread(pacs.work / "in" / name)
            assert stored.PixelData == source.PixelData
            assert stored == source
            continue
        assert _dataset_bytes(part) == _dataset_bytes(original), name
    imaging = httpx.get(f"{pacs.base}/fhir/ImagingStudy/{STUDY_JPEG}").json()
    assert imaging["numberOfInstances"] == 1 and imaging["meta"]["versionId"] == "1"


def _find(pacs, level_args: list[str], *keys: str, model: str = "-S") -> list:
    out = pacs.work / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = [model, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = pacs.dcm("findscu", *args, *level_args)
    assert result.returncode == 0, result.stderr + result.stdout
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_find_at_every_level(pacs):
    studies = _find(pacs, [], "QueryRetrieveLevel=STUDY", "PatientName=Zhang*",
                    "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
    assert [s.StudyInstanceUID for s in studies] == [STUDY_JPEG]
    assert studies[0].ModalitiesInStudy == "US" and studies[0].RetrieveAETitle == "SONOBRIDGE"
    series = _find(pacs, [], "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_NATIVE}",
                   "SeriesInstanceUID", "Modality")
    assert len(series) == 1 and series[0].Modality == "US"
    images = _find(pacs, [], "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY_JPEG}",
                   "SOPInstanceUID", "NumberOfFrames")
    assert len(images) == 1 and int(images[0].NumberOfFrames) == 4
    patients = _find(pacs, [], "QueryRetrieveLevel=PATIENT", "PatientID=PID-*",
                     "PatientName", model="-P")
    assert sorted(p.PatientID for p in patients) == ["PID-JPEG", "PID-NATIVE"]
    dates = _find(pacs, [], "QueryRetrieveLevel=STUDY", "StudyDate=19000101-20991231",
                  "StudyInstanceUID")
    assert len(dates) >= 3


def test_find_with_an_unsupported_key_returns_it_empty(pacs):
    found = _find(pacs, [], "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={STUDY_JPEG}",
                  "(0010,1000)", "PatientComments", "(0009,0010)")
    assert len(found) == 1 and "PatientComments" in found[0]
    assert not found[0].PatientComments


@pytest.fixture
def storescp(pacs, tmp_path) -> Iterator[Path]:
    received = tmp_path / "received"
    received.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(received),
                             "+xa", str(pacs.store_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    time.sleep(0.5)
    try:
        yield received
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_move_sends_stored_objects_in_their_syntax(pacs, storescp):
    result = pacs.dcm("movescu", "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"StudyInstanceUID={STUDY_JPEG}")
    assert result.returncode == 0, result.stderr + result.stdout
    files = list(storescp.iterdir())
    assert len(files) == 1
    moved = dcmread(files[0])
    assert moved.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # still JPEG
    original = (pacs.work / "in" / "jpeg.dcm").read_bytes()
    assert _dataset_bytes(files[0].read_bytes()) == _dataset_bytes(original)


def test_move_to_an_unknown_destination(pacs):
    result = pacs.dcm("movescu", "-v", "-S", "-aem", "NOWHERE", "-k",
                      "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_JPEG}")
    text = (result.stdout + result.stderr).lower()
    assert "refused: movedestinationunknown" in text  # dcmtk's name for status A801


def test_get(pacs, tmp_path):
    result = pacs.dcm("getscu", "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=SERIES",
                      "-k", f"StudyInstanceUID={STUDY_NATIVE}", "-k", "SeriesInstanceUID=" +
                      dcmread(pacs.work / "in" / "native.dcm").SeriesInstanceUID)
    assert result.returncode == 0, result.stderr + result.stdout
    got = list(tmp_path.glob("*"))
    assert len(got) == 1 and dcmread(got[0]).StudyInstanceUID == STUDY_NATIVE


def test_worklist_after_an_hl7_order(pacs):
    from hl7.client import MLLPClient

    with MLLPClient("127.0.0.1", pacs.mllp) as client:
        ack = client.send_message((FIXTURES / "hl7" / "orm_o01.hl7").read_text())
    assert b"MSA|AA" in ack
    out = pacs.work / "wl"
    out.mkdir()
    result = pacs.dcm("findscu", "-W", "-X", "-od", str(out),
                      "-k", "ScheduledProcedureStepSequence[0].Modality=US",
                      "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
                      "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
                      "-k", "StudyInstanceUID", "-k", "RequestedProcedureDescription")
    assert result.returncode == 0, result.stderr + result.stdout
    items = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    mine = [i for i in items if i.AccessionNumber == "ACC0001"]
    assert len(mine) == 1
    item = mine[0]
    assert item.PatientID == "US-TEST-0001" and str(item.PatientName) == "Doe^Jane"
    assert item.RequestedProcedureDescription == "US ABDOMEN COMPLETE"
    step = item.ScheduledProcedureStepSequence[0]
    assert step.Modality == "US" and step.ScheduledProcedureStepStartDate == "20250101"
    none = pacs.dcm("findscu", "-W", "-X", "-od", str(out), "-k",
                    "ScheduledProcedureStepSequence[0].Modality=CT", "-k", "AccessionNumber")
    assert none.returncode == 0


def test_bad_stores_are_refused_and_nothing_is_indexed(pacs):
    from pynetdicom import AE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    broken = cine("native", frames=1)
    del broken.StudyInstanceUID
    status = assoc.send_c_store(broken)
    assert status.Status != 0x0000
    assoc.release()
    found = httpx.get(f"{pacs.base}/dicomweb/instances",
                      params={"SOPInstanceUID": broken.SOPInstanceUID}).status_code
    assert found == 204


def test_a_value_dicom_json_cannot_carry_is_stored_with_a_warning(pacs, tmp_path):
    """A DS that is not a number, deep in a sequence: storescu hears warning 0xB006
    (Elements Discarded, PS3.4 GG.4-1), the object is kept whole and its metadata holds the
    rest of the sequence."""
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    ds = cine("native", frames=1, study=generate_uid())
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item[0x00180050] = RawDataElement(Tag(0x00180050), "DS", 3, b"abc", 0, False, True)
    ds.ReferencedImageSequence = [item]
    path = tmp_path / "bad-ds.dcm"
    ds.save_as(path, enforce_file_format=True)
    done = pacs.dcm("storescu", "-v", files=(str(path),))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning: ElementsDiscarded" in done.stderr, done.stderr  # dcmtk names 0xB006
    base = (f"{pacs.base}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    whole = httpx.get(base, headers={"Accept": 'multipart/related; type="application/dicom"'},
                      timeout=60)
    assert whole.status_code == 200 and b"abc" in whole.content
    metadata = httpx.get(f"{base}/metadata", timeout=60).json()[0]
    assert metadata["00081140"]["Value"] == [
        {"00081150": {"vr": "UI", "Value": [ds.SOPClassUID]}}]


def test_unsupported_sop_class_or_transfer_syntax_is_rejected(pacs):
    from pynetdicom import AE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.1.2.1.99")  # deflated
    ae.add_requested_context("1.2.840.10008.5.1.1.1", "1.2.840.10008.1.2")  # film session
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.1.2.4.50")
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    assoc.release()
    assert accepted == {("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.1.2.4.50")}
    assert "1.2.840.10008.5.1.1.1" in rejected
    assert pacs.dcm("echoscu").returncode == 0


def test_aborted_transfer_leaves_nothing_half_stored(pacs, tmp_path):
    """The connection is cut after a few P-DATA PDUs of a 14 MB cine: nothing is indexed,
    and the listener goes on serving."""
    from pynetdicom import AE, evt

    big = cine("native", frames=40, rows=300, cols=400, study=generate_uid())
    path = tmp_path / "big.dcm"
    path.write_bytes(to_bytes(big))
    sent = []

    def cut(event) -> None:
        if type(event.pdu).__name__ == "P_DATA_TF":
            sent.append(1)
            if len(sent) == 20:  # well into the data set
                event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(big.SOPClassUID, big.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE",
                         evt_handlers=[(evt.EVT_PDU_SENT, cut)])
    assert assoc.is_established
    status = None
    with contextlib.suppress(Exception):
        status = assoc.send_c_store(path)
    assoc.abort()
    assert len(sent) >= 20  # the cut came mid-transfer...
    assert status is None or "Status" not in status  # ...and no C-STORE-RSP came back
    time.sleep(1)
    assert pacs.dcm("echoscu").returncode == 0  # still serving
    r = httpx.get(f"{pacs.base}/dicomweb/studies/{big.StudyInstanceUID}/series/"
                  f"{big.SeriesInstanceUID}/instances/{big.SOPInstanceUID}",
                  headers={"Accept": 'multipart/related; type="application/dicom"'},
                  timeout=60)
    assert r.status_code == 404
    assert httpx.get(f"{pacs.base}/fhir/ImagingStudy/{big.StudyInstanceUID}").status_code \
        == 404


def test_a_corrupt_data_set_is_refused_and_nothing_is_indexed(pacs, tmp_path):
    """A data set that breaks off inside an element (its length says more than there is)."""
    from pynetdicom import AE

    good = cine("native", frames=2, study=generate_uid())
    data = to_bytes(good)
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    cut = data[:meta_end + (len(data) - meta_end) // 2]  # half the pixel data is missing
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(cut)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(good.SOPClassUID, good.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status in (0xC000, 0xA900, 0x0110), hex(status.Status)  # failure, not 0/B
    r = httpx.get(f"{pacs.base}/dicomweb/instances",
                  params={"SOPInstanceUID": good.SOPInstanceUID})
    assert r.status_code == 204
    assert pacs.dcm("echoscu").returncode == 0


def test_mpps_from_a_modality(pacs):
    from hl7.client import MLLPClient
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityPerformedProcedureStep

    order = ("MSH|^~\\&|RIS|HOSP|USSRV|TELEUS|20261127||ORM^O01|MPPS-ORDER|P|2.3\r"
             "PID|1||PID-JPEG^^^HOSP^MR||Zhang^Wei\rORC|NW|P-MPPS|ACC-MPPS||SC\r"
             "OBR|1|P-MPPS|ACC-MPPS|US-ABD^US ABDOMEN^L\r")
    with MLLPClient("127.0.0.1", pacs.mllp) as client:
        assert b"MSA|AA" in client.send_message(order)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    uid = generate_uid()
    create = Dataset()
    step = Dataset()
    step.AccessionNumber = "ACC-MPPS"
    step.StudyInstanceUID = STUDY_JPEG
    create.ScheduledStepAttributesSequence = [step]
    create.PatientID = "PID-JPEG"
    create.PerformedProcedureStepStatus = "IN PROGRESS"
    create.PerformedProcedureStepStartDate = "20261127"
    create.PerformedProcedureStepStartTime = "101500"
    create.Modality = "US"
    status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261127"
    done.PerformedProcedureStepEndTime = "103000"
    series = Dataset()
    series.SeriesInstanceUID = dcmread(pacs.work / "in" / "jpeg.dcm").SeriesInstanceUID
    done.PerformedSeriesSequence = [series]
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    again, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert again.Status == 0x0110  # already final
    unknown, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, generate_uid())
    assert unknown.Status == 0x0112
    assoc.release()
    task = httpx.get(f"{pacs.base}/fhir/Task",
                     params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}).json()
    task = task["entry"][0]["resource"]
    assert task["status"] == "completed"
    assert task["executionPeriod"]["end"].startswith("2026-11-27T10:30:00")
    order_ref = task["basedOn"][0]["reference"]
    assert httpx.get(f"{pacs.base}/fhir/{order_ref}").json()["status"] == "completed"
    study = httpx.get(f"{pacs.base}/fhir/ImagingStudy/{STUDY_JPEG}").json()
    assert {"reference": order_ref} in study["basedOn"]


def _cli(pacs, *args: str) -> subprocess.CompletedProcess:
    import sys

    env = {**os.environ, "SONOBRIDGE_DICOM_PEERS": f"SELF@127.0.0.1:{pacs.port}",
           "SONOBRIDGE_DATA_DIR": str(pacs.work / "cli-data")}
    return subprocess.run([sys.executable, "-m", "sonobridge", "dicom", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_scu_commands(pacs, storescp):
    target = f"SONOBRIDGE@127.0.0.1:{pacs.port}"
    echo = _cli(pacs, "echo", target)
    assert echo.returncode == 0 and "status 0x0000" in echo.stdout, echo.stderr
    found = _cli(pacs, "find", target, "-k", "PatientID=PID-JPEG", "-k", "StudyInstanceUID")
    assert found.returncode == 0 and STUDY_JPEG in found.stdout, found.stderr
    moved = _cli(pacs, "move", target, "--to", "STORESCP", "-k",
                 f"StudyInstanceUID={STUDY_NATIVE}")
    assert moved.returncode == 0 and "1 sent" in moved.stdout, moved.stderr + moved.stdout
    assert len(list(storescp.iterdir())) == 1
    nobody = _cli(pacs, "echo", "NOBODY@127.0.0.1:1")
    assert nobody.returncode == 1


def _forward_one(tmp_path: Path, ds, *, pacs_late: bool, pacs_args: tuple[str, ...]) -> Path:
    """Store ``ds`` by storescu into a server that forwards US to PACS (a dcmtk storescp,
    started with ``pacs_args``, only after a first failed attempt when ``pacs_late``); the
    file the PACS received."""
    port, store_port = free_port(), free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    path = tmp_path / "cine.dcm"
    path.write_bytes(to_bytes(ds))

    def pacs() -> subprocess.Popen:
        return subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(received), *pacs_args,
                                 str(store_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    proc = None if pacs_late else pacs()
    try:
        with serve(f"sqlite:///{tmp_path / 'fwd.db'}", tmp_path, "--no-sample",
                   SONOBRIDGE_DICOM_PORT=str(port),
                   SONOBRIDGE_DICOM_PEERS=f"PACS@127.0.0.1:{store_port}",
                   SONOBRIDGE_DICOM_FORWARD="PACS:modality=US") as (_base, _log):
            result = subprocess.run(["storescu", "-xf", str(FIXTURES / "storescu-us.cfg"),
                                     "US", "-aec", "SONOBRIDGE", "127.0.0.1", str(port),
                                     str(path)], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            if pacs_late:
                time.sleep(2)  # the PACS is down: the first attempt fails, retried later
                proc = pacs()
            deadline = time.monotonic() + 30
            while not list(received.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    files = list(received.iterdir())
    assert len(files) == 1
    return files[0]


def test_forwarding_rules_send_on_with_retry(tmp_path):
    ds = cine(frames=2, study=generate_uid())
    forwarded = dcmread(_forward_one(tmp_path, ds, pacs_late=True, pacs_args=("+xa",)))
    assert forwarded.SOPInstanceUID == ds.SOPInstanceUID
    assert forwarded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


def test_forwarding_to_a_pacs_that_takes_only_uncompressed(tmp_path):
    """The stored JPEG is decoded for a destination that accepts no JPEG, as C-MOVE does."""
    ds = cine(frames=3, study=generate_uid())
    forwarded = dcmread(_forward_one(tmp_path, ds, pacs_late=False, pacs_args=()))
    assert forwarded.SOPInstanceUID == ds.SOPInstanceUID
    assert forwarded.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert forwarded.PhotometricInterpretation == "RGB"
    assert forwarded.pixel_array.shape == (3, 48, 64, 3)


def test_storage_commitment(pacs):
    import threading

    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.presentation import build_role

    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event):
        reports.append((event.event_type, event.event_information))
        arrived.set()
        return 0x0000, None

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.1.20.1")
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE",
                         ext_neg=[build_role("1.2.840.10008.1.20.1", scu_role=True,
                                             scp_role=True)],
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    stored = dcmread(pacs.work / "in" / "jpeg.dcm", stop_before_pixels=True)
    from tests.hie.dimse.test_commitment import commitment_request

    request = commitment_request(stored)
    status, _ = assoc.send_n_action(request, 1, "1.2.840.10008.1.20.1",
                                    "1.2.840.10008.1.20.1.1")
    assert status.Status == 0x0000
    assert arrived.wait(10)
    assoc.release()
    event_type, info = reports[0]
    assert event_type == 2  # some failed
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == \
        [stored.SOPInstanceUID]
    assert info.FailedSOPSequence[0].FailureReason == 0x0112


def test_requestor_sockets_are_tuned_before_the_association_request(pacs):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from sonobridge.hie.dimse import sockets

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title="SONOBRIDGE",
                         evt_handlers=sockets.REQUESTOR_HANDLERS)
    assert assoc.is_established
    try:
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        if hasattr(socket, "TCP_QUICKACK"):
            assert isinstance(sock, sockets.QuickAckSocket)
        assert assoc.send_c_echo().Status == 0x0000  # the swapped socket carries DIMSE
    finally:
        assoc.release()


def test_a_sender_with_nagle_on_is_acknowledged_at_once(pacs):
    """dcmtk as Debian builds it leaves Nagle on (TCP_NODELAY=0 says so explicitly): without
    quick ACKs each of these C-STOREs would wait 40 ms for the delayed ACK. Counted, not
    timed: the server's socket statistics show no delayed ACKs for this association."""
    files = [str(p) for p in sorted((pacs.work / "in").glob("*.dcm"))]
    before = _delayed_acks()
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SONOBRIDGE", "-xf",
                             str(FIXTURES / "storescu-us.cfg"), "US", "127.0.0.1",
                             str(pacs.port), *files * 5],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TCP_NODELAY": "0"})
    assert result.returncode == 0, result.stderr
    if before is None:
        pytest.skip("no /proc/net/netstat here")
    stores = len(files) * 5
    # other tests running beside this one may add a few; without quick ACKs it is one per store
    assert _delayed_acks() - before < stores // 3


def _delayed_acks() -> int | None:
    """TcpExt DelayedACKs: ACKs this host sent only when the delayed-ACK timer fired."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table["DelayedACKs"])
    return None
