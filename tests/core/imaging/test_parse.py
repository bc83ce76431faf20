"""The frame table: every frame located by ranged reads, whatever the encapsulation."""

from __future__ import annotations

import io

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
