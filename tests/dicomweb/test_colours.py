"""True colours (issue 12, part 2): every decoded frame equals pydicom's reference decode.

The table is every ultrasound object of pydicom's test files and of pydicom-data (Modality US
or an ultrasound SOP class), and the colour and bit-depth cases beside them: RGB (by pixel
and by plane), YBR_FULL and YBR_FULL_422 native and JPEG, PALETTE COLOR with 8- and 16-bit
LUTs, RLE, JPEG 2000, JPEG lossless, MONOCHROME2, big endian, BitsStored below
BitsAllocated, signed. Each is stored over STOW-RS, its first and last frames asked for
decoded (``transfer-syntax=1.2.840.10008.1.2.1``) and compared with ``pixel_array`` as
pydicom gives it by default (YBR as RGB): max error 0 for lossless, at most 2 grey levels for
lossy. Decoding does not touch the database: these tests run on SQLite only.
"""

from __future__ import annotations

import shutil
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import pixel_array
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

from tests.dicom_data import DATA, cine, to_bytes
from tests.dicomweb.helpers import instance_url, parts, stow

DECODED = 'multipart/related; type="application/octet-stream"; ' \
          "transfer-syntax=1.2.840.10008.1.2.1"
PYDICOM = Path(pydicom.data.__file__).parent / "test_files"
US_CLASSES = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2",
              "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6",
              "1.2.840.10008.5.1.4.1.1.3"}
# JPEG baseline is decoded by pydicom's Pillow plugin (libjpeg-turbo, as the server does), not
# its first choice pylibjpeg: two conformant decoders whose chroma upsampling differs by up to
# 5 levels on these files, more than the lossy tolerance says about one decoder.
PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow"}
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
         "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93"}
# Colour and bit-depth cases that are not ultrasound objects.
EXTRA = {
    DATA / "SC_ybr_full_uncompressed.dcm",          # YBR_FULL native
    PYDICOM / "SC_ybr_full_422_uncompressed.dcm",   # YBR_FULL_422 native
    PYDICOM / "SC_rgb_jpeg_dcmtk.dcm",              # YBR_FULL in JPEG baseline
    PYDICOM / "SC_rgb_dcmtk_+eb+cy+np.dcm",         # YBR_FULL_422 in JPEG baseline
    PYDICOM / "SC_rgb_small_odd_jpeg.dcm",          # 3 x 3, odd sizes
    DATA / "693_UNCR.dcm",                          # signed, 14 of 16 bits stored
    DATA / "MR2_UNCR.dcm",                          # 12 of 16 bits stored
    DATA / "RG1_UNCR.dcm",                          # MONOCHROME1, 15 of 16 bits
    DATA / "emri_small_big_endian.dcm",             # 16-bit big endian, 10 frames
}


def _table() -> list[Path]:
    found = set(EXTRA)
    for folder in (DATA, PYDICOM):
        for path in folder.glob("*.dcm"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = dcmread(path, stop_before_pixels=True)
            except Exception:  # damaged test files are not in the table
                continue
            if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}) or "Rows" not in ds:
                continue
            if ds.get("Modality") == "US" or str(ds.get("SOPClassUID", "")) in US_CLASSES:
                found.add(path)
    return sorted(found, key=lambda p: (p.parent.name, p.name))


TABLE = _table()


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path):
    """SQLite only: decoding does not touch the database."""
    target = tmp_path / "sonobridge.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


def decoded(client, ds, number: int) -> bytes:
    r = client.get(f"{instance_url(ds)}/frames/{number}", headers={"Accept": DECODED})
    assert r.status_code == 200, r.text
    [(headers, body)] = parts(r)
    # stored implicit VR frames keep their transfer syntax: the pixel bytes are the same
    assert headers["content-type"] in (
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2")
    return body


def max_error(body: bytes, reference: np.ndarray) -> int:
    assert len(body) == reference.nbytes
    ours = np.frombuffer(body, reference.dtype.newbyteorder("<")).reshape(reference.shape)
    return int(np.abs(ours.astype(np.int64) - reference.astype(np.int64)).max())


@pytest.mark.parametrize("path", TABLE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_decoded_frames_match_pydicom(client, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, stop_before_pixels=True)
        r = stow(client, [], raw=[path.read_bytes()])
        assert r.status_code == 200, r.text
        count = int(ds.get("NumberOfFrames", 1) or 1)
        allowed = 2 if str(ds.file_meta.TransferSyntaxUID) in LOSSY else 0
        for number in sorted({1, count}):
            reference = pixel_array(path, index=number - 1, decoding_plugin=PLUGIN.get(
                str(ds.file_meta.TransferSyntaxUID), ""))
            error = max_error(decoded(client, ds, number), reference)
            assert error <= allowed, (path.name, number, error)


# ------------------------------------------------------------------------------ rendered


def rendered_png(client, data: bytes, query: str = "") -> np.ndarray:
    assert stow(client, [], raw=[data]).status_code == 200
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    r = client.get(f"{instance_url(ds)}/frames/1/rendered{query}",
                   headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(BytesIO(r.content)))


def to_8_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.rint(np.clip((values - low) / (high - low), 0, 1) * 255).astype(int)


@pytest.mark.parametrize("name,twin", [
    ("OBXXXX1A", "OBXXXX1A"), ("OBXXXX1A_expb", "OBXXXX1A"),   # 16-bit entries, 256 of them
    ("gdcm-US-ALOKA-16", "gdcm-US-ALOKA-16"),                  # 16-bit indices, segmented
    ("gdcm-US-ALOKA-16_big", "gdcm-US-ALOKA-16")])
def test_palette_colour_renders_through_its_lut(client, name, twin):
    """The top 8 bits of each 16-bit entry; big endian files as their little endian twins."""
    ours = rendered_png(client, (DATA / f"{name}.dcm").read_bytes())
    ds = dcmread(DATA / f"{twin}.dcm")
    reference = apply_color_lut(ds.pixel_array, ds) >> 8
    assert ours.shape == reference.shape
    assert int(np.abs(ours.astype(int) - reference.astype(int)).max()) == 0


def test_voi_lut_sequence_and_modality_lut_sequence(client):
    voi = dcmread(DATA / "vlut_04.dcm")
    depth = voi.VOILUTSequence[0].LUTDescriptor[2]
    reference = to_8_bits(apply_voi(voi.pixel_array, voi).astype(float), 0, 2 ** depth - 1)
    ours = rendered_png(client, (DATA / "vlut_04.dcm").read_bytes())
    assert int(np.abs(ours.astype(int) - reference).max()) == 0
    mlut = dcmread(DATA / "mlut_18.dcm")
    values = apply_modality_lut(mlut.pixel_array, mlut).astype(float)
    reference = to_8_bits(values, values.min(), values.max())  # no VOI: the data's range
    ours = rendered_png(client, (DATA / "mlut_18.dcm").read_bytes())
    assert int(np.abs(ours.astype(int) - reference).max()) == 0


def grey_us(function: str | None, center: float, width: float, **extra) -> bytes:
    """A 16-bit (12 stored) MONOCHROME2 ultrasound image, 0..4095 in a ramp."""
    ds = cine("native", frames=1)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    del ds.NumberOfFrames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(48 * 64, dtype="<u2") * 4 % 4096).tobytes()
    ds["PixelData"].VR = "OW"
    ds.WindowCenter, ds.WindowWidth = center, width
    if function:
        ds.VOILUTFunction = function
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


RAMP = (np.arange(48 * 64) * 4 % 4096).reshape(48, 64).astype(float)


def test_linear_window_is_the_one_of_ps3_3(client):
    """PS3.3 C.11.2.1.2.1: c - 0.5, w - 1, 0 below, 255 above."""
    center, width = 2048.0, 1024.0
    ours = rendered_png(client, grey_us(None, center, width))
    x = RAMP
    expected = np.where(x <= center - 0.5 - (width - 1) / 2, 0,
                        np.where(x > center - 0.5 + (width - 1) / 2, 255,
                                 ((x - (center - 0.5)) / (width - 1) + 0.5) * 255))
    assert int(np.abs(ours.astype(int) - np.rint(expected)).max()) == 0


def test_sigmoid_and_linear_exact_windows_and_monochrome1(client):
    center, width = 1000.0, 600.0
    ours = rendered_png(client, grey_us("SIGMOID", center, width))
    expected = 255 / (1 + np.exp(-4 * (RAMP - center) / width))  # PS3.3 C.11.2.1.3.1
    assert int(np.abs(ours.astype(int) - np.rint(expected)).max()) == 0
    ours = rendered_png(client, grey_us("LINEAR_EXACT", center, width,
                                        PhotometricInterpretation="MONOCHROME1"))
    expected = np.clip((RAMP - center) / width + 0.5, 0, 1) * 255  # C.11.2.1.3.2
    assert int(np.abs(ours.astype(int) - (255 - np.rint(expected))).max()) == 0


def test_rescale_then_window_and_the_window_asked_for(client):
    """Modality LUT (slope, intercept) before the window; the request's window wins."""
    data = grey_us(None, 0.0, 400.0, RescaleSlope=0.5, RescaleIntercept=-1000)
    values = RAMP * 0.5 - 1000
    for query, (center, width) in (("", (0.0, 400.0)), ("?window=-500,200", (-500, 200))):
        ours = rendered_png(client, data, query)
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        expected = np.where(values <= low, 0, np.where(
            values > high, 255, ((values - (center - 0.5)) / (width - 1) + 0.5) * 255))
        assert int(np.abs(ours.astype(int) - np.rint(expected)).max()) == 0, query
