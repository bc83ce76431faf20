"""An indexed object whose stored file is gone: every retrieval answers 404 with a Warning (no
500, no cut-off stream), and `sonobridge verify` names it (tests/app/cli/test_backup.py)."""

from __future__ import annotations

import pytest

from tests.dicom_data import cine
from tests.dicomweb.helpers import stow


@pytest.mark.parametrize("path,accept", [
    ("", 'multipart/related; type="application/dicom"'),
    ("/frames/1", 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
    ("/rendered", "image/jpeg"),
    ("/frames/2/rendered", "image/png"),
])
def test_missing_blob_is_a_404_with_a_warning(client, core, path, accept):
    ds = cine("jpeg", frames=2)
    assert stow(client, [ds]).status_code == 200
    [key] = list(core.blobs.keys("dicom/"))
    core.blobs.delete(key)
    r = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
                   f"instances/{ds.SOPInstanceUID}{path}", headers={"Accept": accept})
    assert r.status_code == 404, r.text
    assert "missing" in r.headers["warning"] and r.json()["error"] == "not_found"
