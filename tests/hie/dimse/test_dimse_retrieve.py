"""C-GET and C-MOVE in whatever the peer accepts (stored bytes when it takes the stored syntax,
an uncompressed copy when it does not), and C-FIND status and matching details; dcmtk and
pynetdicom as the peers of a live server."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from tests.dicom_data import cine, to_bytes
from tests.hie.dimse.test_dimse import FIXTURES, Pacs, _dataset_bytes
from tests.live import free_port, needs_dcmtk, serve

STUDY_JPEG, STUDY_NATIVE, STUDY_MIXED = "2.25.7101", "2.25.7102", "2.25.7103"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
UNCOMPRESSED = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}
H264 = "1.2.840.10008.1.2.4.102"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"

pytestmark = needs_dcmtk


class World(Pacs):
    plain: Path  # what storescp without options (uncompressed only) received
    all_syntaxes: Path  # what storescp +xa received
    video_uid: str


def _video(study: str) -> Dataset:
    """An H.264 object: stored as it came, and undecodable here (no video decoder)."""
    ds = cine("jpeg", frames=2, study=study, patient_id="PID-MIXED")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = VIDEO_PHOTOGRAPHIC
    ds.file_meta.TransferSyntaxUID = H264
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01\x67" + bytes(64)], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return dcmread(io.BytesIO(to_bytes(ds)))  # as a file is read: explicit VR


def _store_with_pynetdicom(port: int, ds: Dataset) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("retrieve")
    port, plain_port, all_port = free_port(), free_port(), free_port()
    files = work / "in"
    files.mkdir()
    jpeg = cine(frames=4, study=STUDY_JPEG, patient_id="PID-ZW", patient_name="Zhang^Wei=张^伟")
    jpeg.SpecificCharacterSet = "ISO_IR 192"
    native = cine("native", frames=2, study=STUDY_NATIVE, patient_id="PID-LN",
                  patient_name="Li^Na")
    mixed = cine(frames=3, study=STUDY_MIXED, patient_id="PID-MIXED")
    (files / "jpeg.dcm").write_bytes(to_bytes(jpeg))
    (files / "native.dcm").write_bytes(to_bytes(native))
    (files / "mixed.dcm").write_bytes(to_bytes(mixed))
    peers = ",".join([f"STORESCP@127.0.0.1:{plain_port}", f"STORESCPXA@127.0.0.1:{all_port}",
                      "NOBODY@127.0.0.1:1"])
    plain, all_syntaxes = work / "plain", work / "all"
    plain.mkdir()
    all_syntaxes.mkdir()
    receivers = [
        subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(plain), str(plain_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["storescp", "-aet", "STORESCPXA", "-od", str(all_syntaxes), "+xa",
                          str(all_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        with serve(f"sqlite:///{work / 'pacs.db'}", work, "--no-sample",
                   SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_DICOM_PEERS=peers) as (base, _):
            world = World(base, port, work, plain_port, 0)
            world.plain, world.all_syntaxes = plain, all_syntaxes
            result = world.dcm("storescu", "-xf", str(FIXTURES / "storescu-us.cfg"), "US",
                               files=tuple(str(p) for p in sorted(files.iterdir())))
            assert result.returncode == 0, result.stderr + result.stdout
            video = _video(STUDY_MIXED)
            _store_with_pynetdicom(port, video)
            world.video_uid = video.SOPInstanceUID
            yield world
    finally:
        for proc in receivers:
            proc.terminate()
            proc.wait(timeout=10)


def _received(folder: Path, count: int = 1) -> list[Path]:
    deadline = time.monotonic() + 10
    while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return sorted(folder.iterdir())


@pytest.fixture
def clean(world: World) -> World:
    for folder in (world.plain, world.all_syntaxes):
        for path in folder.iterdir():
            path.unlink()
    return world


def _assert_decoded_copy(path: Path, original: Path) -> None:
    """An uncompressed copy of the stored JPEG cine: same instance, RGB, every frame."""
    got, source = dcmread(path), dcmread(original)
    assert got.file_meta.TransferSyntaxUID in UNCOMPRESSED
    assert got.SOPInstanceUID == source.SOPInstanceUID
    assert got.PhotometricInterpretation == "RGB" and got.PlanarConfiguration == 0
    assert int(got.NumberOfFrames) == 4
    assert len(got.PixelData) == got.Rows * got.Columns * 3 * 4
    assert got.LossyImageCompression == "01"  # decoded, but it was lossy compressed
    # JPEG baseline is decoded by pydicom's Pillow plugin on the server (core/imaging/frames.py)
    source.decompress(as_rgb=True, generate_instance_uid=False, decoding_plugin="pillow")
    assert np.array_equal(got.pixel_array, source.pixel_array)


# ------------------------------------------------------------------------------ C-GET


def test_plain_getscu_gets_the_jpeg_cine_uncompressed(world, tmp_path):
    result = world.dcm("getscu", "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={STUDY_JPEG}")
    assert result.returncode == 0, result.stderr + result.stdout
    got = list(tmp_path.iterdir())
    assert len(got) == 1
    _assert_decoded_copy(got[0], world.work / "in" / "jpeg.dcm")


def test_getscu_that_accepts_jpeg_gets_the_stored_bytes(world, tmp_path):
    """+xy: JPEG first in its proposal; +B: written as received (no re-encoding)."""
    result = world.dcm("getscu", "-S", "+xy", "+B", "-od", str(tmp_path), "-k",
                       "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_JPEG}")
    assert result.returncode == 0, result.stderr + result.stdout
    got = list(tmp_path.iterdir())
    assert len(got) == 1
    assert dcmread(got[0]).file_meta.TransferSyntaxUID == JPEG_BASELINE
    original = (world.work / "in" / "jpeg.dcm").read_bytes()
    assert _dataset_bytes(got[0].read_bytes()) == _dataset_bytes(original)


def _get(world: World, study: str, syntaxes: list[str]) -> tuple[list[Dataset], Dataset]:
    """C-GET with pynetdicom as the requestor: (pending responses, final response)."""
    from pynetdicom import AE, evt
    from pynetdicom.presentation import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(GET)
    classes = ["1.2.840.10008.5.1.4.1.1.3.1", VIDEO_PHOTOGRAPHIC]
    for sop_class in classes:
        for syntax in syntaxes:  # a context each: the acceptor picks one syntax per context
            ae.add_requested_context(sop_class, syntax)
    arrived: list[str] = []

    def store(event):
        arrived.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    assoc = ae.associate("127.0.0.1", world.port, ae_title="SONOBRIDGE",
                         ext_neg=[build_role(c, scp_role=True) for c in classes],
                         evt_handlers=[(evt.EVT_C_STORE, store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        responses = [status for status, _ in assoc.send_c_get(identifier, GET)]
    finally:
        assoc.release()
    return responses[:-1], responses[-1]


def test_get_counts_what_cannot_be_decoded_as_failed(world):
    """The JPEG cine goes uncompressed, the H.264 object cannot: a warning, 1 + 1."""
    pending, final = _get(world, STUDY_MIXED, sorted(UNCOMPRESSED))
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfFailedSuboperations == 1
    assert final.NumberOfWarningSuboperations == 0
    assert [p.Status for p in pending] == [0xFF00, 0xFF00]
    assert [int(p.NumberOfRemainingSuboperations) for p in pending] == [1, 0]


def test_get_with_the_video_syntax_accepted_sends_both(world):
    _, final = _get(world, STUDY_MIXED, [*sorted(UNCOMPRESSED), H264])
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2


def test_get_of_nothing_decodable_fails_every_sub_operation(world):
    """Only the video of the mixed study, only uncompressed syntaxes: A702."""
    from pynetdicom import AE
    from pynetdicom.presentation import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(GET)
    ae.add_requested_context(VIDEO_PHOTOGRAPHIC, sorted(UNCOMPRESSED))
    assoc = ae.associate("127.0.0.1", world.port, ae_title="SONOBRIDGE",
                         ext_neg=[build_role(VIDEO_PHOTOGRAPHIC, scp_role=True)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = STUDY_MIXED
    identifier.SOPInstanceUID = world.video_uid
    try:
        answers = list(assoc.send_c_get(identifier, GET))
    finally:
        assoc.release()
    final, failed = answers[-1]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 1 and final.NumberOfCompletedSuboperations == 0
    assert failed.FailedSOPInstanceUIDList == world.video_uid


# ------------------------------------------------------------------------------ C-MOVE


def test_move_to_a_storescp_that_takes_only_uncompressed(clean):
    result = clean.dcm("movescu", "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={STUDY_JPEG}")
    assert result.returncode == 0, result.stderr + result.stdout
    got = _received(clean.plain)
    assert len(got) == 1
    _assert_decoded_copy(got[0], clean.work / "in" / "jpeg.dcm")


def test_move_to_a_storescp_that_takes_jpeg_is_byte_exact(clean):
    result = clean.dcm("movescu", "-S", "-aem", "STORESCPXA", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={STUDY_JPEG}")
    assert result.returncode == 0, result.stderr + result.stdout
    got = _received(clean.all_syntaxes)
    assert len(got) == 1
    assert dcmread(got[0]).file_meta.TransferSyntaxUID == JPEG_BASELINE
    original = (clean.work / "in" / "jpeg.dcm").read_bytes()
    assert _dataset_bytes(got[0].read_bytes()) == _dataset_bytes(original)


def test_move_native_objects_stay_byte_exact(clean):
    result = clean.dcm("movescu", "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={STUDY_NATIVE}")
    assert result.returncode == 0, result.stderr + result.stdout
    got = _received(clean.plain)
    assert len(got) == 1
    original = (clean.work / "in" / "native.dcm").read_bytes()
    assert _dataset_bytes(got[0].read_bytes()) == _dataset_bytes(original)


def test_move_counts(clean):
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MOVE)
    assoc = ae.associate("127.0.0.1", clean.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = STUDY_MIXED
    try:
        answers = list(assoc.send_c_move(identifier, "STORESCP", MOVE))
    finally:
        assoc.release()
    final, failed = answers[-1]
    assert final.Status == 0xB000  # the cine sent uncompressed, the video refused
    assert final.NumberOfCompletedSuboperations == 1
    assert final.NumberOfFailedSuboperations == 1
    assert failed.FailedSOPInstanceUIDList == clean.video_uid
    assert len(_received(clean.plain)) == 1


# ------------------------------------------------------------------------------ units


def test_move_contexts_put_what_is_needed_first():
    from sonobridge.hie.dimse.retrieve import MAX_CONTEXTS, Stored, move_contexts

    def stored(sop_class: str, syntax: str) -> Stored:
        return Stored(generate_uid(), "2.25.1", sop_class, syntax, "/nowhere")

    us = "1.2.840.10008.5.1.4.1.1.3.1"
    few = [stored(us, JPEG_BASELINE), stored(us, "1.2.840.10008.1.2.1"),
           stored(VIDEO_PHOTOGRAPHIC, H264)]
    contexts = [(c.abstract_syntax, c.transfer_syntax) for c in move_contexts(few)]
    assert contexts == [(us, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]),
                        (VIDEO_PHOTOGRAPHIC, [H264]), (us, [JPEG_BASELINE])]
    # 100 classes, each with a JPEG object: every class keeps its uncompressed fallback,
    # the JPEG contexts fill what is left of the 128
    many = [stored(f"1.2.3.{n}", JPEG_BASELINE) for n in range(100)]
    contexts = move_contexts(many)
    assert len(contexts) == MAX_CONTEXTS
    assert {c.abstract_syntax for c in contexts[:100]} == {f"1.2.3.{n}" for n in range(100)}
    assert all(c.transfer_syntax[0] == "1.2.840.10008.1.2.1" for c in contexts[:100])


def test_uncompressed_copy_keeps_elements_after_the_pixels(tmp_path):
    from sonobridge.core.imaging.transcode import EXPLICIT_LE, IMPLICIT_LE, uncompressed_copy

    ds = cine(frames=3)
    ds.add_new(0x7FE10010, "LO", "VENDOR")  # a private element after Pixel Data
    ds.add_new(0x7FE11001, "OB", b"\x01\x02")
    ds.DataSetTrailingPadding = b"\0" * 8
    source = tmp_path / "in.dcm"
    source.write_bytes(to_bytes(ds))
    for syntax in (EXPLICIT_LE, IMPLICIT_LE):
        copy = uncompressed_copy(source, syntax, str(tmp_path))
        got = dcmread(copy)
        assert got.file_meta.TransferSyntaxUID == syntax
        assert got[0x7FE10010].value == "VENDOR" and got[0x7FE11001].value == b"\x01\x02"
        assert "DataSetTrailingPadding" not in got
        assert got.pixel_array.shape == (3, 48, 64, 3)
        copy.unlink()


def test_uncompressed_copy_decodes_one_frame_at_a_time(tmp_path):
    """A 100-frame 480 x 640 JPEG cine decodes to 92 MB; the copy needs a few frames' worth
    (decoder and colour conversion buffers), the same for 20 frames as for 100."""
    import tracemalloc

    from sonobridge.core.imaging.transcode import EXPLICIT_LE, uncompressed_copy

    frame = 480 * 640 * 3
    peaks = []
    for frames in (20, 100):
        source = tmp_path / f"cine-{frames}.dcm"
        source.write_bytes(to_bytes(cine(frames=frames, rows=480, cols=640)))
        tracemalloc.start()
        try:
            copy = uncompressed_copy(source, EXPLICIT_LE, str(tmp_path))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert copy.stat().st_size > frame * frames
    assert peaks[1] < 16 * frame, peaks
    assert peaks[1] < peaks[0] * 1.2, peaks


# ------------------------------------------------------------------------------ C-FIND


def _find_statuses(world: World, keys: dict[str, object], model: str = "study"
                   ) -> tuple[list[int], list[Dataset], int]:
    """(pending statuses, their identifiers, final status) of a pynetdicom C-FIND."""
    from pynetdicom import AE
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
    )

    sop_class = StudyRootQueryRetrieveInformationModelFind if model == "study" else \
        PatientRootQueryRetrieveInformationModelFind
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", world.port, ae_title="SONOBRIDGE")
    assert assoc.is_established
    identifier = Dataset()
    identifier.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    try:
        answers = list(assoc.send_c_find(identifier, sop_class))
    finally:
        assoc.release()
    pending = [(int(status.Status), found) for status, found in answers[:-1]]
    return [s for s, _ in pending], [f for _, f in pending], int(answers[-1][0].Status)


def test_find_pending_status_says_when_a_key_was_not_matched_on(world):
    base = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY_JPEG}
    statuses, found, final = _find_statuses(world, {**base, "PatientComments": "",
                                                    "StudyDescription": ""})
    assert statuses == [0xFF00] and final == 0x0000
    assert "PatientComments" in found[0]
    # a value on a key this server cannot match on: still answered, with FF01
    statuses, _, final = _find_statuses(world, {**base, "PatientComments": "anything"})
    assert statuses == [0xFF01] and final == 0x0000
    # "*" alone is universal matching: nothing was left unmatched
    statuses, _, _ = _find_statuses(world, {**base, "PatientComments": "*"})
    assert statuses == [0xFF00]
    code = Dataset()
    code.CodeValue = "US-ABD"
    statuses, _, _ = _find_statuses(world, {**base, "ProcedureCodeSequence": [code]})
    assert statuses == [0xFF01]
    empty = Dataset()
    empty.CodeValue = ""
    statuses, _, _ = _find_statuses(world, {**base, "ProcedureCodeSequence": [empty]})
    assert statuses == [0xFF00]


def test_patient_level_belongs_to_patient_root_only(world):
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": "PID-ZW", "PatientName": ""}
    statuses, _, final = _find_statuses(world, keys, model="study")
    assert statuses == [] and final == 0xA900
    statuses, found, final = _find_statuses(world, keys, model="patient")
    assert statuses == [0xFF00] and final == 0x0000
    assert str(found[0].PatientName) == "Zhang^Wei=张^伟"


@pytest.mark.parametrize("level, keys, model", [
    ("STUDY", ["StudyInstanceUID", "PatientID"], "-S"),
    ("SERIES", ["StudyInstanceUID", "SeriesInstanceUID", "PatientID"], "-S"),
    ("IMAGE", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"], "-S"),
    ("PATIENT", ["PatientID"], "-P"),
])
def test_find_matches_the_ideographic_name_group_with_findscu(world, tmp_path, level, keys,
                                                                model):
    args = [model, "-X", "-od", str(tmp_path), "-k", f"QueryRetrieveLevel={level}",
            "-k", "SpecificCharacterSet=ISO_IR 192", "-k", "PatientName=张*"]
    for key in keys:
        args += ["-k", key]
    result = world.dcm("findscu", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    found = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert len(found) == 1, [str(f.PatientName) for f in found]
    assert str(found[0].PatientName) == "Zhang^Wei=张^伟"
    assert found[0].PatientID == "PID-ZW"


@pytest.mark.parametrize("name, hits", [
    ("张*", 1), ("张^伟", 1), ("*伟", 1), ("Zhang^Wei", 1), ("zhang*", 1),
    ("Zhang^Wei=张^伟", 1), ("=张^伟", 1), ("Zhang^Wei=李*", 0), ("李*", 0), ("伟*", 0),
])
def test_person_name_matching_per_component_group(world, name, hits):
    statuses, _, final = _find_statuses(world, {"QueryRetrieveLevel": "STUDY",
                                                "PatientName": name, "StudyInstanceUID": ""})
    assert final == 0x0000 and len(statuses) == hits, name
