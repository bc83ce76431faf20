"""Decompression bombs and oversized requests (security hardening, items 2 and 8): geometry is
checked against the header inside the compressed stream, before anything is decoded; a
rendering's frames are bounded before the first is decoded; a request's work stops when its
client leaves. Uses the ``client`` fixture (authorization off): the limits hold for everyone."""

from __future__ import annotations

import io
import resource
import time

import pytest
from PIL import Image
from pydicom.encaps import encapsulate

from tests.dicom_data import cine
from tests.dicomweb.helpers import stow

MB = 1024 * 1024


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8 x 8 JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    out = io.BytesIO()
    Image.new("L", (8, 8), 128).save(out, "JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def bomb(width: int, height: int, frames: int = 1, rows: int | None = None,
         columns: int | None = None):
    """A JPEG baseline object of ``frames`` tiny fragments, each claiming ``width`` x
    ``height``; Rows and Columns as given (the claimed size by default)."""
    ds = cine(frames=1)
    ds.Rows, ds.Columns = rows or height, columns or width
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([jpeg_claiming(width, height)] * frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _url(ds) -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
            f"instances/{ds.SOPInstanceUID}")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_frame_header_that_disagrees_with_rows_and_columns_is_refused_at_ingest(client):
    ds = bomb(12000, 12000, rows=48, columns=64)
    r = stow(client, [ds])
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xC000]
    assert client.get(f"{_url(ds)}/metadata").status_code == 404


@pytest.mark.parametrize("size", [12000, 30000])
def test_a_one_kilobyte_bomb_is_refused_before_decoding(client, size):
    ds = bomb(size, size)
    assert stow(client, [ds]).status_code == 200  # stored as received: nothing is lost
    before, started = _peak_mb(), time.process_time()
    for path, accept in (("/thumbnail", "image/jpeg"), ("/rendered", "image/jpeg"),
                         ("/frames/1", "multipart/related; type=application/octet-stream; "
                                       "transfer-syntax=1.2.840.10008.1.2.1")):
        r = client.get(_url(ds) + path, headers={"Accept": accept})
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert "pixels per frame" in r.json()["message"]
    assert time.process_time() - started < 2
    assert _peak_mb() - before < 300


def test_a_cine_too_large_to_decode_is_refused_before_its_first_frame(client):
    ds = bomb(4000, 4000, frames=200)  # 200 frames of 16 megapixels: 9.6 GB as RGB
    assert stow(client, [ds]).status_code == 200
    started = time.process_time()
    r = client.get(f"{_url(ds)}/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 413, r.text[:200]
    assert "pixels; at most" in r.json()["message"]
    assert time.process_time() - started < 2


def test_frame_lists_are_bounded_and_unique(client):
    ds = cine(frames=2)
    assert stow(client, [ds]).status_code == 200
    accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    assert client.get(f"{_url(ds)}/frames/1,2", headers=accept).status_code == 200
    assert client.get(f"{_url(ds)}/frames/1,1", headers=accept).status_code == 400
    many = ",".join(["1"] * 300)
    assert client.get(f"{_url(ds)}/frames/{many}", headers=accept).status_code == 400
    huge = ",".join(str(n) for n in range(1, 1200))
    r = client.get(f"{_url(ds)}/frames/{huge}", headers=accept)
    assert r.status_code == 400 and "at most 1000" in r.json()["message"]
    for bad in ("0", "-1", "3", "99999999999999999999", "\uff11"):
        assert client.get(f"{_url(ds)}/frames/{bad}", headers=accept).status_code in (400, 404)


def test_jpeg_baseline_of_a_16_bit_instance_is_refused_before_the_first_byte(client):
    ds = cine("native", frames=1)
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.PixelData = bytes(ds.Rows * ds.Columns * 2)
    ds["PixelData"].VR = "OW"
    assert stow(client, [ds]).status_code == 200
    r = client.get(_url(ds), headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406, r.text[:200]
    assert "8-bit" in r.json()["message"]


def test_a_rendering_stops_when_its_budget_is_spent(core):
    from sonobridge.core.errors import CoreError
    from sonobridge.core.limits import Budget

    spent = Budget(time.monotonic() - 1, 0.0)
    with pytest.raises(CoreError) as stopped:
        spent.check()
    assert stopped.value.status == 503
    gone = core.archive.limits.budget()
    gone.cancel()
    with pytest.raises(CoreError) as left:
        gone.check()
    assert left.value.status == 499


def test_dimse_transcoding_refuses_a_bomb_before_decoding(tmp_path):
    """C-GET and C-MOVE to a peer that takes only uncompressed data decode through the same
    transcoder: the limits hold there too (the sub-operation fails, nothing is allocated)."""
    from sonobridge.core.imaging.transcode import CannotConvert, uncompressed_copy
    from tests.dicom_data import to_bytes

    source = tmp_path / "bomb.dcm"
    source.write_bytes(to_bytes(bomb(30000, 30000)))
    started = time.process_time()
    with pytest.raises(CannotConvert) as refused:
        uncompressed_copy(source, "1.2.840.10008.1.2.1", tmp_path)
    assert "pixels per frame" in str(refused.value)
    assert time.process_time() - started < 2
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.dcm"]  # no temporary file left
