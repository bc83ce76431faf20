"""Test data for bench/dicomweb.py, made with tests/fixtures/make_us_cine.py.

* ``cines``: N ultrasound cines (600x800, 120 JPEG frames, about 10 MB each), each in its own
  study, all from ONE rendering and ONE JPEG encoding of the frames (fresh UIDs per copy).
* ``single_frame_series``: one study with one series of N single-frame 256x256 JPEG instances.
* ``write_native_cine``: a native RGB cine of about 1 GB written straight to a file in chunks,
  never held in memory.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from make_us_cine import build_dataset, encode_jpeg_frames, render_frames


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    data: bytes  # Part 10 file
    frames: int


def _part10(ds) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def render(rows: int, cols: int, frames: int, quality: int = 85
           ) -> tuple[np.ndarray, list[bytes]]:
    """RGB frames and their JPEG encoding (done once, reused by every copy)."""
    rgb = render_frames(rows, cols, frames, seed=0)
    return rgb, encode_jpeg_frames(rgb, quality)


def cines(count: int, jpeg_frames: list[bytes], rows: int, cols: int) -> list[Instance]:
    """``count`` JPEG cines with fresh study, series and SOP UIDs."""
    out = []
    for i in range(count):
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        ds = build_dataset(rows, cols, len(jpeg_frames), jpeg_frames=jpeg_frames,
                           study_uid=study, series_uid=series, sop_uid=sop,
                           patient_id=f"BENCH-{i:04d}", accession=f"BA{i:06d}")
        out.append(Instance(study, series, sop, _part10(ds), len(jpeg_frames)))
    return out


def single_frame_series(count: int, size: int = 256) -> list[Instance]:
    """One study, one series, ``count`` single-frame JPEG instances (InstanceNumber 1..N)."""
    _, jpeg = render(size, size, 1)
    study, series = generate_uid(), generate_uid()
    out = []
    for number in range(1, count + 1):
        sop = generate_uid()
        ds = build_dataset(size, size, 1, jpeg_frames=jpeg, study_uid=study, series_uid=series,
                           sop_uid=sop, patient_id="BENCH-SERIES", accession="BSERIES",
                           instance_number=number)
        out.append(Instance(study, series, sop, _part10(ds), 1))
    return out


def write_native_cine(path: Path, frames_rgb: np.ndarray, nframes: int) -> Instance:
    """A native (Explicit VR LE, RGB) cine of ``nframes`` frames, cycling ``frames_rgb``.

    The header is written by pydicom for a dataset without PixelData; the PixelData element
    (OB, explicit length) is then appended by hand, one frame at a time.
    """
    _, rows, cols, _ = frames_rgb.shape
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = build_dataset(rows, cols, nframes, raw_rgb=frames_rgb[:1], study_uid=study,
                       series_uid=series, sop_uid=sop, patient_id="BENCH-NATIVE",
                       accession="BNATIVE")
    del ds.PixelData
    frame_size = rows * cols * 3
    length = frame_size * nframes
    if length % 2 or length >= 0xFFFFFFFF:
        raise ValueError(f"native pixel data of {length} bytes cannot be encoded")
    with path.open("wb") as f:
        ds.save_as(f, enforce_file_format=True)
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length))
        for i in range(nframes):
            f.write(np.ascontiguousarray(frames_rgb[i % len(frames_rgb)]).tobytes())
    return Instance(study, series, sop, b"", nframes)
