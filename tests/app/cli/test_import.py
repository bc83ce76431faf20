"""``sonobridge import``: every file stored or refused with its reason, the run goes on, the
summary counts both, and no temporary file is ever left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.dicom_data import cine, to_bytes

BAD = ("badVR.dcm", "MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
       "no_meta.dcm")
GOOD = ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg.dcm", "US1_UNCR.dcm")


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp / "data"),
           "SONOBRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'import.db'}"}
    return subprocess.run([sys.executable, "-m", "sonobridge", "import", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def leftovers(data: Path) -> list[str]:
    """Files in the data directory that are neither stored objects nor the keys."""
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()
                  and "dicom" not in p.relative_to(data).parts and p.parent.name != "keys")


def test_bad_files_are_listed_and_the_rest_imported(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in BAD + GOOD:
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    (folder / "notes.txt").write_text("not DICOM")
    result = run(tmp_path, str(folder))
    assert result.returncode == 1, result.stderr
    out = " ".join(result.stderr.split())  # the console is stderr; rich wraps long lines
    assert "3 imported (3 stored), 5 failed" in out, out
    assert "badVR.dcm: NumberOfFrames '1A' is not a number" in out
    assert "MR_truncated.dcm: the file is truncated" in out
    assert "notes.txt" in out
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr
    assert leftovers(tmp_path / "data") == [], leftovers(tmp_path / "data")


def test_more_than_twenty_failures_are_summarised_unless_verbose(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(23):
        (folder / f"junk{n:02}.dcm").write_bytes(b"junk" * n)
    (folder / "good.dcm").write_bytes(to_bytes(cine(frames=1)))
    short = " ".join(run(tmp_path, str(folder)).stderr.split())
    assert "… and 3 more (--verbose lists them all)" in short
    assert "1 imported (1 stored), 23 failed" in short, short
    full = " ".join(run(tmp_path, "--verbose", str(folder)).stderr.split())
    assert full.count("failed /") == 23 and "… and" not in full
    assert leftovers(tmp_path / "data") == []
