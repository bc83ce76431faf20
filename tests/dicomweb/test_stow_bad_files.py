"""STOW-RS of ordinary and broken files together: the broken ones are listed in the Failed
SOP Sequence with their reason (409), the others stored, and nothing is left half-written in
the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import stow

BROKEN = {  # file -> why it cannot be stored
    "badVR.dcm": "NumberOfFrames '1A' is not a number",
    "MR_truncated.dcm": "truncated",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
}


def _files_outside_the_store(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()
                  and "dicom" not in p.relative_to(data).parts and p.suffix not in (
                      ".db", ".db-wal", ".db-shm") and p.parent.name != "keys")


def _truncated_mid_header() -> bytes:
    data = to_bytes(cine(frames=2))
    return data[:data.index(b"\xe0\x7f\x10\x00") - 30]


@pytest.mark.parametrize("name", [*BROKEN, "mid-header"])
def test_a_broken_file_fails_alone_and_leaves_nothing(client, settings, name):
    good = cine(frames=2)
    broken = _truncated_mid_header() if name == "mid-header" else \
        Path(get_testdata_file(name)).read_bytes()
    alone = stow(client, [], raw=[broken])
    assert alone.status_code == 409, alone.text  # PS3.18: nothing stored
    r = stow(client, [], raw=[to_bytes(good), broken])
    assert r.status_code == 202, r.text  # PS3.18: some stored, some failed
    body = r.json()
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"]["Value"][0] in (0xC000, 0xA900)
    reason = r.headers["warning"]
    assert reason.startswith('299 SonoBridge "')
    assert len(body["00081199"]["Value"]) == 1  # the good one is stored
    assert client.get(f"/dicomweb/studies/{good.StudyInstanceUID}/series/"
                      f"{good.SeriesInstanceUID}/instances/{good.SOPInstanceUID}/metadata"
                      ).status_code == 200
    assert _files_outside_the_store(settings.data_dir) == []
    assert BROKEN.get(name, "truncated") in reason


def test_ordinary_files_that_were_refused_before_are_stored(client):
    for name in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg.dcm"):
        ds = dcmread(get_testdata_file(name))
        r = stow(client, [], raw=[Path(get_testdata_file(name)).read_bytes()])
        assert r.status_code == 200, (name, r.text)
        frame = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                           f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1",
                           headers={"Accept": "multipart/related; type=\"application/octet-"
                                              "stream\"; transfer-syntax=*"})
        assert frame.status_code == 200, (name, frame.text[:300])
