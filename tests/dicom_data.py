"""DICOM test objects, generated (cine loops) or taken from pydicom-data (real ultrasound)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import data_store
import pytest
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from make_us_cine import build_dataset, encode_jpeg_frames, render_frames

DATA = Path(data_store.__file__).parent / "data"


def to_bytes(ds: FileDataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def cine(kind: str = "jpeg", frames: int = 6, rows: int = 48, cols: int = 64, seed: int = 1,
         study: str | None = None, series: str | None = None, **extra: object) -> FileDataset:
    """A small cine loop: jpeg (offset table), jpeg-nobot, jpeg-eot, fragments (2 per frame,
    no offset table), fragments-bot, or native RGB."""
    pixels = render_frames(rows, cols, frames, seed)
    if kind == "native":
        ds = build_dataset(rows, cols, frames, raw_rgb=pixels, study_uid=study, series_uid=series,
                           sop_uid=generate_uid(), **extra)
    else:
        encoded = encode_jpeg_frames(pixels)
        ds = build_dataset(rows, cols, frames, jpeg_frames=encoded, study_uid=study,
                           series_uid=series, sop_uid=generate_uid(), **extra)
        if kind == "jpeg-nobot":
            ds.PixelData = encapsulate(encoded, has_bot=False)
        elif kind == "jpeg-eot":
            data, offsets, lengths = encapsulate_extended(encoded)
            ds.PixelData = data
            ds.ExtendedOffsetTable = offsets
            ds.ExtendedOffsetTableLengths = lengths
        elif kind in ("fragments", "fragments-bot"):
            ds.PixelData = encapsulate(encoded, fragments_per_frame=2,
                                       has_bot=kind == "fragments-bot")
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.expected_frames = [bytes(f) for f in encoded]  # type: ignore[attr-defined]
    return ds


@pytest.fixture
def us_files() -> dict[str, Path]:
    """Real ultrasound objects from pydicom-data."""
    return {name: DATA / f"{name}.dcm" for name in (
        "color3d_jpeg_baseline", "OBXXXX1A", "OBXXXX1A_rle_2frame", "US1_J2KR", "US1_UNCR",
        "gdcm-US-ALOKA-16", "OBXXXX1A_expb_2frame")}


def read(path: Path) -> FileDataset:
    return dcmread(path)
