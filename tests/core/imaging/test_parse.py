"""The frame table: every frame located by ranged reads, whatever the encapsulation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread

from sonobridge.core.imaging.parse import DicomParseError, parse
from tests.dicom_data import cine, to_bytes


def frames_of(data: bytes) -> list[bytes]:
    parsed = parse(io.BytesIO(data), len(data))
    assert parsed.pixels is not None
    return [b"".join(data[o:o + n] for o, n in ranges) for ranges in parsed.pixels.frames]


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-nobot", "jpeg-eot", "fragments",
                                  "fragments-bot"])
def test_encapsulated_frames_are_found_exactly(kind):
    ds = cine(kind, frames=5)
    found = frames_of(to_bytes(ds))
    # A frame is the concatenation of its fragments; fragments may carry a pad byte.
    assert len(found) == 5
    for got, expected in zip(found, ds.expected_frames, strict=True):
        assert got.rstrip(b"\0") == expected.rstrip(b"\0")


def test_native_frames():
    ds = cine("native", frames=4, rows=24, cols=12)
    data = to_bytes(ds)
    found = frames_of(data)
    raw = dcmread(io.BytesIO(data)).PixelData
    size = 24 * 12 * 3
    assert found == [raw[i * size:(i + 1) * size] for i in range(4)]


def test_real_files(us_files):
    for name, frames in (("color3d_jpeg_baseline", 120), ("OBXXXX1A", 1),
                         ("OBXXXX1A_rle_2frame", 2), ("US1_J2KR", 1),
                         ("OBXXXX1A_expb_2frame", 2), ("gdcm-US-ALOKA-16", 1)):
        data = us_files[name].read_bytes()
        assert len(frames_of(data)) == frames, name
    j2k = frames_of(us_files["US1_J2KR"].read_bytes())[0]
    assert j2k[:2] == b"\xff\x4f"  # a whole JPEG 2000 codestream from three fragments


def test_truncated_and_not_dicom():
    data = to_bytes(cine("jpeg", frames=3))
    with pytest.raises(DicomParseError, match="truncated"):
        parse(io.BytesIO(data[:-500]), len(data) - 500)
    native = to_bytes(cine("native", frames=3))
    with pytest.raises(DicomParseError):
        parse(io.BytesIO(native[:-100]), len(native) - 100)
    with pytest.raises(DicomParseError):
        parse(io.BytesIO(b"not dicom at all" * 20), 320)


def _testdata(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name)).read_bytes()


def test_native_frame_sizes_come_from_the_photometric_interpretation():
    """YBR_FULL_422 holds two samples per pixel (pydicom's get_expected_length): 20000 bytes
    for 100 x 100, not 30000."""
    data = _testdata("SC_ybr_full_422_uncompressed.dcm")
    [frame] = frames_of(data)
    assert frame == dcmread(io.BytesIO(data)).PixelData and len(frame) == 20000


def test_a_header_in_implicit_vr_under_an_explicit_transfer_syntax_is_read_as_pydicom_does():
    data = _testdata("SC_rgb_jpeg.dcm")
    [frame] = frames_of(data)
    assert frame[:2] == b"\xff\xd8"


def test_one_bit_frames_that_share_bytes_are_kept_whole():
    ds = cine("native", frames=3, rows=15, cols=15)
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    del ds.PlanarConfiguration
    ds.PixelData = b"\x55" * 86  # 675 bits, packed across frames
    data = to_bytes(ds)
    parsed = parse(io.BytesIO(data), len(data))
    assert parsed.pixels is not None and parsed.pixels.frames == []


@pytest.mark.parametrize("frames,reason", [
    ("0", "at least 1"), ("-1", "at least 1"), ("1A", "not a number"),
    ("1000000000", "fewer than")])
def test_absurd_numbers_of_frames_are_refused(frames, reason):
    raw = to_bytes(cine("native", frames=2, rows=16, cols=16))
    # NumberOfFrames is an IS (string); write it as bytes so pydicom does not refuse it first
    element = b"\x28\x00\x08\x00IS"
    at = raw.index(element)
    old_length = int.from_bytes(raw[at + 6:at + 8], "little")
    value = frames.encode() + (b" " if len(frames) % 2 else b"")
    patched = raw[:at + 6] + len(value).to_bytes(2, "little") + value + \
        raw[at + 8 + old_length:]
    with pytest.raises(DicomParseError, match=reason):
        parse(io.BytesIO(patched), len(patched))


@pytest.mark.parametrize("bits", [0, 7, 64])
def test_bits_allocated_no_decoder_knows_is_refused(bits):
    ds = cine("native", frames=1, rows=16, cols=16)
    ds.BitsAllocated = bits
    data = to_bytes(ds)
    with pytest.raises(DicomParseError, match="Bits Allocated"):
        parse(io.BytesIO(data), len(data))


def test_truncated_in_the_header_and_mid_fragment():
    data = to_bytes(cine("jpeg", frames=3))
    header_end = data.index(b"\xe0\x7f\x10\x00")
    with pytest.raises(DicomParseError):
        parse(io.BytesIO(data[:header_end - 30]), header_end - 30)
    fragment = data.index(b"\xff\xd8") + 40  # inside the first frame's fragment
    with pytest.raises(DicomParseError, match="truncated"):
        parse(io.BytesIO(data[:fragment]), fragment)


def test_an_offset_table_that_disagrees_with_number_of_frames_is_refused():
    ds = cine("jpeg", frames=3)
    ds.NumberOfFrames = 4
    data = to_bytes(ds)
    with pytest.raises(DicomParseError, match="offset table lists 3 frames"):
        parse(io.BytesIO(data), len(data))
