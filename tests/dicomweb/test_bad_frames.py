"""Bad frame requests (issue 12, "Bad input"): a frame that does not decode, frame numbers that
do not exist, a viewport no one should allocate."""

from __future__ import annotations

import resource

import pytest
from pydicom.encaps import encapsulate

from tests.dicom_data import cine
from tests.dicomweb.helpers import instance_url, parts, stow

DECODED = 'multipart/related; type="application/octet-stream"; ' \
          "transfer-syntax=1.2.840.10008.1.2.1"
STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def broken_second_frame():
    """A two-frame JPEG cine whose second frame keeps its frame header (so ingest, which
    reads it, takes it) over a damaged Huffman table no decoder accepts."""
    ds = cine("jpeg", frames=2)
    good, bad = ds.expected_frames
    table = bad.index(b"\xff\xc4")  # DHT: its code counts become impossible
    bad = bad[:table + 4] + b"\xff" * 16 + bad[table + 20:]
    ds.PixelData = encapsulate([good, bad])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds, bad


def test_a_frame_that_does_not_decode_is_a_406_with_a_warning_and_nothing_cached(client, core):
    ds, bad = broken_second_frame()
    assert stow(client, [ds]).status_code == 200
    url = f"{instance_url(ds)}/frames/2"
    computed = core.archive.cache.computed
    for _ in range(2):  # refused again, not served from a cache
        r = client.get(url, headers={"Accept": DECODED})
        assert r.status_code == 406, r.text
        assert "cannot be decoded" in r.json()["message"]
        assert r.headers["warning"].startswith('299 SonoBridge "this frame cannot be decoded')
    assert core.archive.cache.computed == computed
    assert not [key for key in core.archive.cache._items if ds.SOPInstanceUID in key]
    # the server keeps serving: the good frame decodes, the bad one is there as stored
    r = client.get(f"{instance_url(ds)}/frames/1", headers={"Accept": DECODED})
    assert r.status_code == 200 and len(parts(r)[0][1]) == 48 * 64 * 3
    r = client.get(url, headers={"Accept": STORED})
    assert r.status_code == 200 and parts(r)[0][1].rstrip(b"\0") == bad.rstrip(b"\0")
    rendered = client.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 406


@pytest.mark.parametrize("kind", ["jpeg", "native"])
@pytest.mark.parametrize("accept", [STORED, DECODED])
def test_frame_numbers_that_do_not_exist(client, kind, accept):
    ds = cine(kind, frames=3)
    stow(client, [ds])
    url = instance_url(ds)
    for number, status in (("0", 404), ("4", 404), ("-1", 400), ("1,0", 404),
                           ("999999999", 404), ("1.5", 400)):
        r = client.get(f"{url}/frames/{number}", headers={"Accept": accept})
        assert r.status_code == status, (number, r.text)
    for number, status in (("0", 404), ("4", 404), ("-1", 400)):
        for what in ("rendered", "thumbnail"):
            r = client.get(f"{url}/frames/{number}/{what}", headers={"Accept": "image/png"})
            assert r.status_code == status, (number, what, r.text)


def test_a_huge_viewport_is_refused_before_anything_is_allocated(client):
    ds = cine("jpeg", frames=2)
    stow(client, [ds])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for path in ("rendered", "frames/1/rendered", "thumbnail"):
        r = client.get(f"{instance_url(ds)}/{path}?viewport=100000,100000",
                       headers={"Accept": "image/png"})
        assert r.status_code == 400 and "viewport" in r.json()["message"]
    # 100000 x 100000 RGB would be 30 GB; nothing near that was touched
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024
