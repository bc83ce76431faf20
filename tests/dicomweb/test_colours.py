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
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.pixels import pixel_array

from tests.dicom_data import DATA
from tests.dicomweb.helpers import instance_url, parts, stow

DECODED = 'multipart/related; type="application/octet-stream"; ' \
          "transfer-syntax=1.2.840.10008.1.2.1"
PYDICOM = Path(pydicom.data.__file__).parent / "test_files"
US_CLASSES = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2",
              "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6",
              "1.2.840.10008.5.1.4.1.1.3"}
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
            reference = pixel_array(path, index=number - 1)
            error = max_error(decoded(client, ds, number), reference)
            assert error <= allowed, (path.name, number, error)
