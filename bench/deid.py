"""De-identification speed: frames per second for a 120-frame 600 x 800 ultrasound cine with
pixel cleaning (PS3.15 Basic Profile + the teaching options, header band blanked on every
frame, re-encoded), in process, against a naive peer measured in the same run.

* ``sonobridge``: ``core/deid`` as a teaching case runs it (JPEG frames decoded, masked and
  re-encoded one at a time in their own colour space; native frames masked as they stream);
* ``naive``: what a script with pydicom alone does: ``pixel_array`` of the whole cine (RGB),
  mask, encode every frame with Pillow (JPEG Baseline, also for the native cine).

Each run is a fresh process, so its peak RSS is its own.

    .venv/bin/python bench/deid.py                # 120 frames, 600 x 800, 3 runs
    .venv/bin/python bench/deid.py --frames 30 --runs 1

Last, a teaching case of a study of 50 single-frame images is published through the core
(stored first, then ``Teaching.add`` timed: de-identification, KOS, ingest of the copies).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
from make_us_cine import build_dataset, encode_jpeg_frames, render_frames

from sonobridge.core.deid import Deidentifier
from sonobridge.mappings.deid import TEACHING

BAND = 60


def make(path: Path, rows: int, cols: int, frames: int, native: bool) -> None:
    pixels = render_frames(rows, cols, frames)
    pixels[:, 10:40, 20:420] = 255  # the burned-in header band
    if native:
        ds = build_dataset(rows, cols, frames, raw_rgb=pixels)
    else:
        ds = build_dataset(rows, cols, frames, jpeg_frames=encode_jpeg_frames(pixels))
    ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = BAND
    ds.save_as(path, enforce_file_format=True)


def sonobridge(source: Path, out: Path) -> None:
    deid = Deidentifier(b"bench-key-0123456789")
    ctx = deid.context([dcmread(source, stop_before_pixels=True)], TEACHING)
    deid.clean_file(source, ctx, out)


def naive(source: Path, out: Path) -> None:
    ds = dcmread(source)
    array = ds.pixel_array  # every frame decoded at once, as RGB
    array[:, :BAND] = 0
    frames = []
    for frame in array:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=95, subsampling=1)
        frames.append(buf.getvalue())
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.save_as(out, enforce_file_format=True)


def _child(name: str, source: Path, out: Path) -> tuple[float, float]:
    """One run in a fresh process: its seconds and its own peak RSS (MB)."""
    fn = {"sonobridge": sonobridge, "naive": naive}[name]
    start = time.perf_counter()
    fn(source, out)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, source: Path, out: Path, runs: int) -> tuple[float, float]:
    """Median seconds and the largest peak RSS over ``runs`` fresh processes."""
    context = multiprocessing.get_context("spawn")
    results = []
    for _ in range(runs):
        with context.Pool(1) as pool:
            results.append(pool.apply(_child, (name, source, out)))
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def study_case(root: Path, images: int, rows: int, cols: int) -> tuple[float, float]:
    """A teaching case of a study of ``images`` single-frame JPEG images, through the core
    (temporary SQLite data directory): store them, then time ``Teaching.add`` (de-identify
    every image with pixel cleaning, the KOS, ingest of the copies). Run in a child."""
    from pydicom.uid import generate_uid

    from sonobridge.config import Settings
    from sonobridge.core.policy import Policy
    from sonobridge.core.services import open_core
    from sonobridge.core.teaching import CaseRequest, teaching_of

    settings = Settings(data_dir=root / "data", auth="disabled", audit=False,
                        load_sample=False, deid_key="bench-key-0123456789")
    core = open_core(settings)
    try:
        study, series = generate_uid(), generate_uid()
        pixels = render_frames(rows, cols, 1)
        pixels[:, 10:40, 20:420] = 255
        jpeg = encode_jpeg_frames(pixels)
        for number in range(images):
            ds = build_dataset(rows, cols, 1, jpeg_frames=jpeg, study_uid=study,
                               series_uid=series, instance_number=number + 1)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = \
                "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image
            ds.SequenceOfUltrasoundRegions[0].RegionLocationMinY0 = BAND
            path = root / f"{number}.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert core.ingest.ingest(core.ingest.receiver.from_file(path), core.server).ok
        caller = core.caller(Policy.system("bench", "bench"))
        start = time.perf_counter()
        teaching_of(core).add(caller, study, CaseRequest())
        seconds = time.perf_counter() - start
    finally:
        core.close()
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--cols", type=int, default=800)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=50, help="images of the study case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        for kind in ("jpeg", "native"):
            source = root / f"{kind}.dcm"
            # made in a child: a forked child starts with its parent's peak RSS (Linux keeps
            # it across exec), so the parent must never hold a cine
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                pool.apply(make, (source, args.rows, args.cols, args.frames, kind == "native"))
            size = source.stat().st_size / 1e6
            for peer in ("sonobridge", "naive"):
                seconds, peak = measure(peer, source, root / f"{peer}.dcm", args.runs)
                print(f"{kind:6} {args.cols}x{args.rows}x{args.frames} ({size:.0f} MB)  "
                      f"{peer:10} {seconds:5.2f} s = {args.frames / seconds:4.0f} frames/s, "
                      f"peak RSS {peak:.0f} MB", flush=True)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            seconds, peak = pool.apply(study_case, (root / "study", args.images, args.rows,
                                                    args.cols))
        print(f"study  {args.images} images {args.cols}x{args.rows} JPEG: teaching case "
              f"(de-identify, KOS, store the copy) {seconds:.2f} s, peak RSS {peak:.0f} MB",
              flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
