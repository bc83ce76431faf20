"""Clean Pixel Data and the object-level de-identifier (core/deid) on a golden corpus made
here: ultrasound cines with the patient's name, ID and date burned into the header band of
every frame (JPEG Baseline, native RGB, RLE; with and without ultrasound regions), an SR with
the name in a TEXT item, a presentation state with an overlay."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders.base import RLELosslessEncoder
from pydicom.pixels.utils import iter_pixels
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from sonobridge.core.deid import Deidentifier, load_key
from sonobridge.core.deid.pixels import load_masks
from sonobridge.core.errors import CoreError
from sonobridge.mappings.deid import TEACHING, Options, hmac_uid

sys.path.insert(0, str(Path(__file__).parent.parent / "fixtures"))
from make_us_cine import build_dataset, encode_jpeg_frames, render_frames

KEY = b"pixel-test-key-0123"
BAND = 40
NAME, PID, ACC, BIRTH, DATE = "Doe^Jane", "US-TEST-0001", "ACC0001", "19800101", "20230415"
BURNED = "DOE JANE  US-TEST-0001  2023-04-15"
IDENTIFYING = ("Doe", "Jane", PID, ACC, BIRTH, DATE)


def burned_frames(frames: int, rows: int, cols: int, seed: int = 1) -> np.ndarray:
    out = render_frames(rows, cols, frames, seed=seed)
    font = ImageFont.load_default(size=18)
    for i in range(frames):
        image = Image.fromarray(out[i])
        ImageDraw.Draw(image).text((6, 10), BURNED, fill=(255, 255, 255), font=font)
        out[i] = np.asarray(image)
    return out


def burned_cine(path: Path, kind: str = "jpeg", *, frames: int = 6, rows: int = 240,
                cols: int = 320, regions: bool = True, study_uid: str | None = None,
                series_uid: str | None = None, number: int = 1
                ) -> tuple[FileDataset, np.ndarray]:
    """A cine whose header band (rows 0..BAND-1) carries the burned-in identity."""
    pixels = burned_frames(frames, rows, cols, seed=number)
    if kind == "jpeg":
        ds = build_dataset(rows, cols, frames, jpeg_frames=encode_jpeg_frames(pixels, 92),
                           study_uid=study_uid, series_uid=series_uid, patient_id=PID,
                           patient_name=NAME, accession=ACC, instance_number=number)
    else:
        ds = build_dataset(rows, cols, frames, raw_rgb=pixels, study_uid=study_uid,
                           series_uid=series_uid, patient_id=PID, patient_name=NAME,
                           accession=ACC, instance_number=number)
        if kind == "rle":
            encoded = [RLELosslessEncoder.encode(
                np.ascontiguousarray(f), rows=rows, columns=cols, samples_per_pixel=3,
                bits_allocated=8, bits_stored=8, pixel_representation=0,
                photometric_interpretation="RGB", number_of_frames=1,
                planar_configuration=0) for f in pixels]
            ds.PixelData = encapsulate(encoded, has_bot=True)
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
            ds.PlanarConfiguration = 0
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = DATE
    ds.AcquisitionDateTime = DATE + "101500"
    ds.InstanceCreationDate = DATE
    ds.PatientBirthDate = BIRTH
    ds.StudyDescription = f"US abdomen {NAME}"
    if regions:
        ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = BAND
    else:
        del ds.SequenceOfUltrasoundRegions
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path, enforce_file_format=True)
    return ds, pixels


def sr_with_name(path: Path, study_uid: str, image: FileDataset) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 2, 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = NAME, PID, BIRTH, "F"
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = DATE, "101500", DATE, "103000"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = ACC, "", "1"
    ds.Manufacturer = "ToolboxSim"
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "126000", "DCM", "Report"
    ds.ConceptNameCodeSequence = Sequence([title])
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = \
        "121071", "DCM", "Finding"
    text.ConceptNameCodeSequence = Sequence([concept])
    text.TextValue = f"Jane Doe ({PID}), 2023-04-15: 2 cm hepatic cyst"
    ref_item = Dataset()
    ref_item.RelationshipType, ref_item.ValueType = "CONTAINS", "IMAGE"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = \
        image.SOPClassUID, image.SOPInstanceUID
    ref_item.ReferencedSOPSequence = Sequence([ref])
    ds.ContentSequence = Sequence([text, ref_item])
    ds.save_as(path, enforce_file_format=True)
    return ds


def clean(tmp_path: Path, source: Path, options: Options = TEACHING,
          masks: dict | None = None) -> Path:
    deid = Deidentifier(KEY, masks)
    ctx = deid.context([dcmread(source, stop_before_pixels=True)], options)
    out = tmp_path / (source.stem + "-clean.dcm")
    deid.clean_file(source, ctx, out)
    return out


def assert_no_leak(path: Path, originals: tuple[str, ...] = ()) -> None:
    """No identifying string in the file's bytes before its Pixel Data (compressed pixels
    are random bytes where a 3-letter name turns up by chance; the band is checked on the
    decoded frames instead)."""
    raw = path.read_bytes()
    pixels = raw.rfind(b"\xe0\x7f\x10\x00")
    header = raw[:pixels] if pixels > 0 else raw
    for text in (*IDENTIFYING, *originals):
        assert text.encode() not in header, text
        assert text.upper().encode() not in header.upper(), text


@pytest.mark.parametrize("kind", ["native", "rle", "jpeg"])
def test_band_blank_on_every_frame_regions_kept(tmp_path: Path, kind: str) -> None:
    source = tmp_path / f"{kind}.dcm"
    ds, frames = burned_cine(source, kind)
    out = clean(tmp_path, source)
    result = dcmread(out)
    assert result.file_meta.TransferSyntaxUID == {
        "native": "1.2.840.10008.1.2.1", "rle": "1.2.840.10008.1.2.5",
        "jpeg": "1.2.840.10008.1.2.4.50"}[kind]
    assert result.BurnedInAnnotation == "NO"
    assert int(result.NumberOfFrames) == len(frames)
    before = list(iter_pixels(source))
    count = 0
    for number, frame in enumerate(iter_pixels(out)):
        count += 1
        # the text was there before
        assert before[number][10:30, 6:200].max() > 200
        if kind == "jpeg":
            assert frame[:BAND - 8].max() <= 3, number  # 8x8 blocks meet the region edge
            diff = np.abs(frame[BAND + 8:].astype(int) - before[number][BAND + 8:].astype(int))
            assert diff.mean() < 3, number
        else:
            assert frame[:BAND].max() == 0, number
            assert np.array_equal(frame[BAND:], before[number][BAND:]), number
    assert count == len(frames)
    codes = [i.CodeValue for i in result.DeidentificationMethodCodeSequence]
    assert codes[:2] == ["113100", "113101"]
    if kind == "jpeg":
        assert result.LossyImageCompression == "01"
        assert list(result.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_10918_1"]
        assert len(result.LossyImageCompressionRatio) == 2
        assert result.PhotometricInterpretation == "YBR_FULL_422"
    else:
        assert result.LossyImageCompression == "00"
    assert_no_leak(out, (str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                         str(ds.SeriesInstanceUID)))
    assert result.StudyInstanceUID == hmac_uid(KEY, str(ds.StudyInstanceUID))


def test_no_regions_and_no_mask_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "noregion.dcm"
    burned_cine(source, "native", regions=False)
    with pytest.raises(CoreError) as info:
        clean(tmp_path, source)
    assert info.value.status == 422 and "no ultrasound regions" in str(info.value)
    assert info.value.issues[0].expression == ["(0018,6011)"]
    assert not (tmp_path / "noregion-clean.dcm").exists()


def test_model_mask_for_scanners_without_regions(tmp_path: Path) -> None:
    source = tmp_path / "noregion.dcm"
    _, frames = burned_cine(source, "native", regions=False)
    masks_file = tmp_path / "masks.json"
    masks_file.write_text(json.dumps({"ToolboxSim|SynthProbe C5-1": {
        "keep": [[0, BAND, 319, 239]], "blank": [[300, 200, 319, 239]]}}))
    out = clean(tmp_path, source, masks=load_masks(masks_file))
    for number, frame in enumerate(iter_pixels(out)):
        assert frame[:BAND].max() == 0
        assert frame[200:, 300:].max() == 0  # blanked inside the kept area too
        assert np.array_equal(frame[BAND:200], frames[number][BAND:200])
    with pytest.raises(ValueError, match="masks file"):
        load_masks(tmp_path / "missing.json")


def test_images_need_clean_pixel_data(tmp_path: Path) -> None:
    source = tmp_path / "x.dcm"
    burned_cine(source, "native")
    with pytest.raises(CoreError) as info:
        clean(tmp_path, source, Options())
    assert info.value.status == 422 and "Clean Pixel Data" in str(info.value)


def test_undecodable_frame_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "broken.dcm"
    ds, _ = burned_cine(source, "jpeg", frames=2)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb garbage", b"\xff\xd8 junk"], has_bot=True)
    ds.save_as(source, enforce_file_format=True)
    with pytest.raises(CoreError) as info:
        clean(tmp_path, source)
    assert info.value.status == 422 and "cannot be decoded" in str(info.value)


def test_unknown_sop_class_and_syntax_refused(tmp_path: Path) -> None:
    source = tmp_path / "pdf.dcm"
    ds, _ = burned_cine(source, "native", frames=1)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.save_as(source, enforce_file_format=True)
    with pytest.raises(CoreError, match="not one this server can de-identify"):
        clean(tmp_path, source)
    source = tmp_path / "mpeg2.dcm"
    ds, _ = burned_cine(source, "native", frames=1)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: not re-encodable
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\0" * 20])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(source, enforce_file_format=True)
    with pytest.raises(CoreError) as info:
        clean(tmp_path, source)
    assert info.value.status == 422 and info.value.issues[0].expression == ["(0002,0010)"]


def test_sr_text_cleaned_and_references_resolve(tmp_path: Path) -> None:
    image_path, sr_path = tmp_path / "img.dcm", tmp_path / "sr.dcm"
    image, _ = burned_cine(image_path, "native", frames=1)
    sr = sr_with_name(sr_path, str(image.StudyInstanceUID), image)
    deid = Deidentifier(KEY)
    ctx = deid.context([dcmread(image_path, stop_before_pixels=True), sr], TEACHING)
    out_image = deid.clean_file(image_path, ctx, tmp_path / "img-out.dcm")
    out_sr = deid.clean_file(sr_path, ctx, tmp_path / "sr-out.dcm")
    result = dcmread(out_sr.path)
    text, ref = result.ContentSequence
    assert "2 cm hepatic cyst" in text.TextValue
    for leaked in ("Jane", "Doe", PID, "2023-04-15"):
        assert leaked not in text.TextValue
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == out_image.sop_instance_uid
    assert result.StudyInstanceUID == out_image.study_uid
    assert result.PatientID == dcmread(out_image.path).PatientID  # one pseudo patient
    assert_no_leak(out_sr.path, (str(sr.SOPInstanceUID), str(image.SOPInstanceUID)))
    # the same again gives the same UIDs
    again = deid.clean_file(sr_path, ctx, tmp_path / "sr-again.dcm")
    assert again.sop_instance_uid == out_sr.sop_instance_uid


def test_overlay_bits_outside_regions_cleared(tmp_path: Path) -> None:
    source = tmp_path / "overlay.dcm"
    ds, _ = burned_cine(source, "native", frames=1, rows=64, cols=64)
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = 32
    ds.add_new(0x60000010, "US", 64)
    ds.add_new(0x60000011, "US", 64)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * (64 * 64 // 8))
    ds.save_as(source, enforce_file_format=True)
    out = dcmread(clean(tmp_path, source, Options(clean_pixel_data=True, clean_graphics=True)))
    bits = np.unpackbits(np.frombuffer(out[0x60003000].value, np.uint8),
                         bitorder="little").reshape(64, 64)
    assert bits[:32].sum() == 0 and bits[32:].all()
    # without Clean Graphics the overlay goes altogether
    out = dcmread(clean(tmp_path, source, Options(clean_pixel_data=True)))
    assert not [e for e in out if e.tag.group == 0x6000]


def test_key_kept_in_the_data_directory(tmp_path: Path) -> None:
    key = load_key("", tmp_path / "keys")
    assert load_key("", tmp_path / "keys") == key and len(key) == 64
    assert (tmp_path / "keys" / "deid.key").stat().st_mode & 0o077 == 0
    assert load_key("a-configured-key-of-20", tmp_path) == b"a-configured-key-of-20"
    with pytest.raises(ValueError):
        load_key("short", tmp_path)


def test_leak_check_is_fail_closed() -> None:
    """The last check refuses an object whose text still names the patient (whatever step
    missed it), naming the attribute, not the value."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = NAME, PID
    deid = Deidentifier(KEY)
    ctx = deid.context([ds], TEACHING)
    ds.PatientName, ds.PatientID = ctx.pseudo_name, ctx.pseudo_id
    ds.StudyDescription = "abdomen"
    ds.RegionDataType = 1
    Deidentifier._check(ds, ctx)  # clean: no error
    ds.StudyDescription = f"abdomen of {PID}"
    with pytest.raises(CoreError) as info:
        Deidentifier._check(ds, ctx)
    assert info.value.status == 422 and info.value.issues[0].expression == ["(0008,1030)"]
    assert PID not in str(info.value)


def test_overlays_without_an_image_or_readable_geometry_go(tmp_path: Path) -> None:
    """A presentation state's own overlay has no regions to be cleaned against, and an
    overlay without Rows/Columns cannot be read: both are removed, not kept as they are."""
    source = tmp_path / "gsps.dcm"
    image, _ = burned_cine(tmp_path / "img.dcm", "native", frames=1, rows=64, cols=64)
    ds = sr_with_name(source, str(image.StudyInstanceUID), image)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    del ds.ContentSequence
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.save_as(source, enforce_file_format=True)
    out = dcmread(clean(tmp_path, source, Options(clean_graphics=True)))
    assert not [e for e in out if e.tag.group == 0x6000]
    source = tmp_path / "broken-overlay.dcm"
    image.add_new(0x60003000, "OW", b"\xff" * 8)  # data without Rows/Columns
    image.save_as(source, enforce_file_format=True)
    out = dcmread(clean(tmp_path, source, Options(clean_pixel_data=True, clean_graphics=True)))
    assert not [e for e in out if e.tag.group == 0x6000]


def test_work_is_bounded(tmp_path: Path) -> None:
    """A frame larger than SONOBRIDGE_LIMIT_FRAME_PIXELS is refused before decoding (413);
    cleaning that outlasts the time budget stops (503)."""
    from sonobridge.core.limits import Limits

    source = tmp_path / "cine.dcm"
    burned_cine(source, "jpeg", frames=3)
    header = dcmread(source, stop_before_pixels=True)
    small = Deidentifier(KEY, limits=Limits(frame_pixels=100 * 100))
    with pytest.raises(CoreError) as info:
        small.clean_file(source, small.context([header], TEACHING), tmp_path / "out.dcm")
    assert info.value.status == 413
    hurried = Deidentifier(KEY, limits=Limits(decode_seconds=-1.0))
    with pytest.raises(CoreError) as info:
        hurried.clean_file(source, hurried.context([header], TEACHING), tmp_path / "out.dcm")
    assert info.value.status == 503
