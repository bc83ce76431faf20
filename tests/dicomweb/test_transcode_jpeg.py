"""The transcode to JPEG baseline (issue 12, "True colours"): what the JPEG frames hold.

JPEG baseline holds unsigned 8-bit grey or colour samples. Palette colour goes through its
palette (not the indices shown as grey) and its palette attributes go; MONOCHROME1 keeps its
values and its photometric interpretation (the receiver inverts it, as for the stored object);
signed grey becomes display values (window, MONOCHROME1 inverted) with the attributes that
would transform them again removed. Each output is decoded with pydicom and compared with
pydicom's own reference (``apply_color_lut``, ``pixel_array``): JPEG at quality 90 is lossy,
so the bound is on the mean error and on the 99th percentile of the error.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.pixels.processing import apply_color_lut

from tests.dicom_data import DATA, cine, to_bytes
from tests.dicomweb.helpers import instance_url, parts, stow

PYDICOM = Path(pydicom.data.__file__).parent / "test_files"
AS_JPEG = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path):
    """SQLite only: transcoding does not touch the database."""
    target = tmp_path / "sonobridge.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


def as_jpeg(client, data: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert stow(client, [], raw=[data]).status_code == 200
    r = client.get(instance_url(ds), headers={"Accept": AS_JPEG})
    assert r.status_code == 200, r.text
    [(headers, body)] = parts(r)
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    out = dcmread(io.BytesIO(body))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert (out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation) == \
        (8, 8, 7, 0)
    return out


def errors(ours: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """The mean error and the 99th percentile (chroma subsampling blurs sharp colour edges:
    the maximum there says nothing about the mapping)."""
    assert ours.shape == reference.shape
    difference = np.abs(ours.astype(int) - reference.astype(int))
    return float(difference.mean()), int(np.percentile(difference, 99))


@pytest.mark.parametrize("path", [DATA / "OBXXXX1A_2frame.dcm", DATA / "OBXXXX1A_rle_2frame.dcm",
                                  PYDICOM / "examples_palette.dcm"], ids=lambda p: p.stem)
def test_palette_colour_goes_through_its_palette(client, path):
    """Native and RLE palette images with 16-bit palette entries: RGB out, palette gone."""
    source = dcmread(path)
    reference = apply_color_lut(source.pixel_array, source)[..., :3] >> 8
    out = as_jpeg(client, path.read_bytes())
    assert (out.PhotometricInterpretation, out.SamplesPerPixel, out.PlanarConfiguration) == \
        ("YBR_FULL_422", 3, 0)
    assert not [e.keyword for e in out if "Palette" in e.keyword]
    ours = out.pixel_array  # RGB, as pydicom decodes YBR
    mean, worst = errors(ours, reference)
    assert mean < 1.5 and worst <= 12, (mean, worst)
    # colour, not the indices as grey: the palette's colours differ across channels
    assert int(np.abs(ours[..., 0].astype(int) - ours[..., 2]).max()) > 100


def grey(photometric: str, signed: bool = False, **extra) -> bytes:
    """An 8-bit grey ultrasound image, a smooth ramp (JPEG keeps it well)."""
    ds = cine("native", frames=1)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    del ds.NumberOfFrames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = int(signed)
    ramp = (np.arange(48 * 64).reshape(48, 64) * 255 // (48 * 64 - 1)).astype(np.uint8)
    ds.PixelData = (ramp.astype(np.int16) - 128).astype(np.int8).tobytes() if signed \
        else ramp.tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


RAMP = (np.arange(48 * 64).reshape(48, 64) * 255 // (48 * 64 - 1)).astype(int)


def test_monochrome1_keeps_its_values_and_its_interpretation(client):
    out = as_jpeg(client, grey("MONOCHROME1", WindowCenter=100, WindowWidth=80))
    assert out.PhotometricInterpretation == "MONOCHROME1"
    assert (out.WindowCenter, out.WindowWidth) == (100, 80)  # still apply to the values
    mean, worst = errors(out.pixel_array, RAMP)
    assert mean < 1 and worst <= 4, (mean, worst)


def test_signed_grey_becomes_display_values(client):
    """-128..127 with a window over all of it: 0..255, MONOCHROME1 inverted; the window and
    the signedness gone from the attributes (they would transform the values again)."""
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        out = as_jpeg(client, grey(photometric, signed=True, WindowCenter=0, WindowWidth=256,
                                   VOILUTFunction="LINEAR_EXACT"))
        assert out.PhotometricInterpretation == "MONOCHROME2"
        assert not {"WindowCenter", "WindowWidth", "VOILUTFunction"} & set(out.dir())
        values = RAMP - 128.0
        expected = np.rint(np.clip(values / 256 + 0.5, 0, 1) * 255)  # PS3.3 C.11.2.1.3.2
        if photometric == "MONOCHROME1":
            expected = 255 - expected
        mean, worst = errors(out.pixel_array, expected)
        assert mean < 1 and worst <= 4, (photometric, mean, worst)


def test_colour_keeps_its_values(client):
    ds = cine("native", frames=2)
    out = as_jpeg(client, to_bytes(ds))
    assert out.PhotometricInterpretation == "YBR_FULL_422"
    reference = np.frombuffer(ds.PixelData, np.uint8).reshape(2, 48, 64, 3)
    mean, _ = errors(out.pixel_array, reference)
    assert mean < 3, mean


def jpeg_frame(client, data: bytes) -> np.ndarray:
    """Frame 1 asked for as image/jpeg (a JPEG baseline encoding of the frame)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert stow(client, [], raw=[data]).status_code == 200
    r = client.get(f"{instance_url(ds)}/frames/1", headers={
        "Accept": 'multipart/related; type="image/jpeg"'})
    assert r.status_code == 200, r.text
    [(headers, body)] = parts(r)
    assert headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    return np.asarray(Image.open(io.BytesIO(body))).astype(int)


def test_a_frame_as_jpeg_follows_the_same_rules(client):
    """MONOCHROME1 8-bit keeps its values (the viewer inverts it, reading the metadata);
    palette colour goes through its palette."""
    ours = jpeg_frame(client, grey("MONOCHROME1"))
    mean, worst = errors(ours, RAMP)
    assert mean < 1 and worst <= 4, (mean, worst)
    source = dcmread(DATA / "OBXXXX1A_rle_2frame.dcm")
    reference = apply_color_lut(source.pixel_array[0], source)[..., :3] >> 8
    ours = jpeg_frame(client, (DATA / "OBXXXX1A_rle_2frame.dcm").read_bytes())
    mean, worst = errors(ours, reference)
    assert mean < 1.5 and worst <= 16, (mean, worst)
