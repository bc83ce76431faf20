"""A long cine rendered as MP4: the server's peak memory and the time to the first byte.

A 720p JPEG cine of 1,800 frames (a minute at 30 fps) is stored by STOW-RS, then
``/rendered`` is asked for as ``video/mp4`` (what a browser's <video> element does), then once
more with a ``Range`` (served from the file kept on disk). The server runs with its default
settings (audit trail on, authorization off so no token is needed).

    .venv/bin/python bench/video.py                 # 1,800 frames of 1280 x 720
    .venv/bin/python bench/video.py --frames 300    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dicom_data import cines, render
from _server import free_port, peak_rss_mb, start, stop

BOUNDARY = "bench-video"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1800)
    parser.add_argument("--rows", type=int, default=720)
    parser.add_argument("--cols", type=int, default=1280)
    args = parser.parse_args()

    print(f"making a {args.cols} x {args.rows} cine of {args.frames} frames …", flush=True)
    _, jpeg = render(args.rows, args.cols, min(args.frames, 60))
    frames = [jpeg[i % len(jpeg)] for i in range(args.frames)]
    [instance] = cines(1, frames, args.rows, args.cols)
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"],
                     {"SONOBRIDGE_DATA_DIR": f"{work}/data", "SONOBRIDGE_AUDIT": "on",
                      "SONOBRIDGE_LIMIT_DECODE_SECONDS": "900"},
                     f"{base}/healthz", Path(work) / "server.log")
        try:
            with httpx.Client(base_url=base, timeout=900) as http:
                body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        + instance.data + f"\r\n--{BOUNDARY}--\r\n".encode())
                stored = http.post("/dicomweb/studies", content=body, headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                                    f"boundary={BOUNDARY}", "Accept": "application/dicom+json"})
                stored.raise_for_status()
                before = peak_rss_mb(proc.pid)
                url = (f"/dicomweb/studies/{instance.study}/series/{instance.series}/"
                       f"instances/{instance.sop}/rendered")
                headers = {"Accept": "video/mp4,*/*;q=0.8", "Range": "bytes=0-"}
                started = time.perf_counter()
                with http.stream("GET", url, headers=headers) as response:
                    first = None
                    size = 0
                    for chunk in response.iter_bytes():
                        first = first or time.perf_counter()
                        size += len(chunk)
                    status = response.status_code
                total = time.perf_counter() - started
                peak = peak_rss_mb(proc.pid)
                again = time.perf_counter()
                part = http.get(url, headers={"Accept": "video/mp4", "Range": "bytes=0-1048575"})
                ranged = time.perf_counter() - again
        finally:
            stop(proc)
    print(f"stored cine: {len(instance.data) / 1e6:.0f} MB, {args.frames} frames "
          f"{args.cols}x{args.rows}")
    print(f"/rendered video/mp4: status {status}, {size / 1e6:.1f} MB, time to first byte "
          f"{(first or started) - started:.1f} s, total {total:.1f} s")
    print(f"server peak RSS: {before:.0f} MB before, {peak:.0f} MB after (+{peak - before:.0f})")
    print(f"the next Range request (1 MB, from the kept file): {part.status_code} in "
          f"{ranged * 1000:.0f} ms")


if __name__ == "__main__":
    main()
