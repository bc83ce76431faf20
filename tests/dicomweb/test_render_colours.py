"""Rendered colours (issue 12, "True colours"): ``/rendered`` and ``/thumbnail`` give
presentation values (PS3.18 8.3.5): the window asked for with its function (``window=center,
width,function``: linear, linear-exact, sigmoid; PS3.3 C.11.2.1.2 and C.11.2.1.3), MONOCHROME1
shown inverted, palette colour through its palette. Expected values are computed here from
PS3.3's formulas and pydicom's ``apply_color_lut``, not from the server's code.
"""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.pixels.processing import apply_color_lut

from tests.dicom_data import DATA, cine, to_bytes
from tests.dicomweb.helpers import instance_url, stow


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path):
    """SQLite only: rendering does not touch the database."""
    target = tmp_path / "sonobridge.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


def grey(photometric: str = "MONOCHROME2", bits: int = 12, **extra) -> bytes:
    """A grey ultrasound image: 16-bit with ``bits`` stored (a ramp over 0..4095), or 8-bit."""
    ds = cine("native", frames=1)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    del ds.NumberOfFrames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    del ds.PlanarConfiguration
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = RAMP8.astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = RAMP.astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


RAMP = (np.arange(48 * 64) * 4 % 4096).reshape(48, 64)
RAMP8 = (np.arange(48 * 64) * 255 // (48 * 64 - 1)).reshape(48, 64)


def get_png(client, data: bytes, path: str = "/frames/1/rendered", query: str = "",
            status: int = 200):
    assert stow(client, [], raw=[data]).status_code == 200
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    r = client.get(f"{instance_url(ds)}{path}{query}", headers={"Accept": "image/png"})
    assert r.status_code == status, r.text
    return np.asarray(Image.open(BytesIO(r.content))).astype(int) if status == 200 else r


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:  # PS3.3 C.11.2.1.2.1
    return np.rint(np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(
        x > c - 0.5 + (w - 1) / 2, 255, ((x - (c - 0.5)) / (w - 1) + 0.5) * 255)))


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:  # C.11.2.1.3.2
    return np.rint(np.clip((x - c) / w + 0.5, 0, 1) * 255)


def sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:  # C.11.2.1.3.1
    return np.rint(255 / (1 + np.exp(-4 * (x - c) / w)))


@pytest.mark.parametrize("function,formula", [
    ("", linear), (",linear", linear), (",linear-exact", linear_exact),
    (",sigmoid", sigmoid), (",SIGMOID", sigmoid)])
def test_the_window_asked_for_with_its_function(client, function, formula):
    """The object says SIGMOID with another window: the request's window and function win
    (no function: linear, PS3.18 8.3.5.1.3)."""
    data = grey(WindowCenter=3000, WindowWidth=100, VOILUTFunction="SIGMOID")
    ours = get_png(client, data, query=f"?window=1500,900{function}")
    assert int(np.abs(ours - formula(RAMP.astype(float), 1500, 900)).max()) == 0


def test_each_function_is_its_own_rendering(client):
    """Not served from the cache of another function's rendering."""
    data = grey()
    first = get_png(client, data, query="?window=1500,900,linear-exact")
    second = get_png(client, data, query="?window=1500,900,sigmoid")
    assert int(np.abs(first - linear_exact(RAMP.astype(float), 1500, 900)).max()) == 0
    assert int(np.abs(second - sigmoid(RAMP.astype(float), 1500, 900)).max()) == 0


@pytest.mark.parametrize("query", ["?window=1500,900,cubic", "?window=1500,900,linear_exact",
                                   "?window=1500,900,", "?window=1500,0,sigmoid",
                                   "?window=1500,900,sigmoid,2"])
def test_a_bad_window_is_400(client, query):
    r = get_png(client, grey(), query=query, status=400)
    assert "window" in r.json()["message"]


def test_monochrome1_is_shown_inverted(client):
    """8-bit values shown as they are, inverted; a 12-bit window, inverted; the request's
    window function too; the thumbnail as the rendering."""
    ours = get_png(client, grey("MONOCHROME1", bits=8))
    assert int(np.abs(ours - (255 - RAMP8)).max()) == 0
    data = grey("MONOCHROME1", WindowCenter=2000, WindowWidth=1000)
    ours = get_png(client, data)
    assert int(np.abs(ours - (255 - linear(RAMP.astype(float), 2000, 1000))).max()) == 0
    ours = get_png(client, data, query="?window=1000,600,sigmoid")
    assert int(np.abs(ours - (255 - sigmoid(RAMP.astype(float), 1000, 600))).max()) == 0
    thumbnail = get_png(client, grey("MONOCHROME1", bits=8), path="/thumbnail",
                        query="?viewport=64,48")
    assert int(np.abs(thumbnail - (255 - RAMP8)).max()) == 0


@pytest.mark.parametrize("name", ["OBXXXX1A_rle_2frame", "OBXXXX1A_2frame"])
def test_palette_colour_thumbnail_and_jpeg_are_in_colour(client, name):
    """The middle frame's thumbnail at full size (PNG: exact) and the JPEG rendering (lossy:
    mean error) through the palette, not the indices as grey."""
    ds = dcmread(DATA / f"{name}.dcm")
    reference = (apply_color_lut(ds.pixel_array[0], ds)[..., :3] >> 8).astype(int)
    data = (DATA / f"{name}.dcm").read_bytes()
    thumbnail = get_png(client, data, path="/thumbnail", query="?viewport=800,600")
    assert thumbnail.shape == reference.shape
    assert int(np.abs(thumbnail - reference).max()) == 0
    r = client.get(f"{instance_url(ds)}/frames/1/rendered", headers={"Accept": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    jpeg = np.asarray(Image.open(BytesIO(r.content))).astype(int)
    assert jpeg.shape == reference.shape
    assert float(np.abs(jpeg - reference).mean()) < 1.5


def test_16_bit_rgb_is_shown_from_its_stored_range(client):
    """RGB with 16 bits allocated, 12 stored: 0..4095 onto 0..255 per sample."""
    ds = cine("native", frames=1)
    del ds.NumberOfFrames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    rgb = np.stack([RAMP, 4095 - RAMP, RAMP // 2], -1)
    ds.PixelData = rgb.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ours = get_png(client, to_bytes(ds))
    assert int(np.abs(ours - np.rint(rgb / 4095 * 255)).max()) == 0
