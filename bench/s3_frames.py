"""WADO-RS frames from the S3 blob store against the same server on files, same run.

A 120-frame 800 x 600 JPEG cine is stored by STOW-RS into two `sonobridge serve` processes
(default settings: audit on, auth off so no token is needed): one on its data directory, one
with ``SONOBRIDGE_BLOB_URL=s3://…`` on a local S3 API server (moto, a Python server: MinIO or
Ceph RGW answer faster). Then every frame is fetched in order, as a viewer plays a cine, with
the viewer's Accept header, N rounds; p50/p95 per frame are printed for both.

    .venv/bin/python bench/s3_frames.py              # 5 rounds of 120 frames
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dicom_data import cines, render
from _server import free_port, start, stop

BOUNDARY = "bench-s3"
ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def start_moto(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    httpx.put(f"{endpoint}/{bucket}").raise_for_status()
    return proc, f"s3://{bucket}/sonobridge?endpoint={endpoint}&region=us-east-1"


def measure(base: str, instance, frames: int, rounds: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=60) as http:
        body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + instance.data + f"\r\n--{BOUNDARY}--\r\n".encode())
        http.post("/dicomweb/studies", content=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Accept": "application/dicom+json"}).raise_for_status()
        url = (f"/dicomweb/studies/{instance.study}/series/{instance.series}/instances/"
               f"{instance.sop}/frames/")
        for n in range(1, frames + 1):  # warm-up round
            http.get(f"{url}{n}", headers={"Accept": ACCEPT}).raise_for_status()
        for _ in range(rounds):
            for n in range(1, frames + 1):
                started = time.perf_counter()
                r = http.get(f"{url}{n}", headers={"Accept": ACCEPT})
                times.append(time.perf_counter() - started)
                assert r.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    _, jpeg = render(600, 800, min(args.frames, 60))
    [instance] = cines(1, [jpeg[i % len(jpeg)] for i in range(args.frames)], 600, 800)
    results = {}
    with tempfile.TemporaryDirectory() as work:
        moto, s3_url = start_moto(Path(work))
        try:
            for name, env in (("files", {}), ("S3 (moto)", {"SONOBRIDGE_BLOB_URL": s3_url})):
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"],
                             {"SONOBRIDGE_DATA_DIR": f"{work}/{name[:5]}",
                              "SONOBRIDGE_AUDIT": "on", **env},
                             f"{base}/healthz", Path(work) / f"{name[:5]}.log")
                try:
                    results[name] = measure(base, instance, args.frames, args.rounds)
                finally:
                    stop(proc)
        finally:
            moto.terminate()
    print(f"{args.frames} frames x {args.rounds} rounds, one frame per request, in order")
    for name, times in results.items():
        ms = sorted(t * 1000 for t in times)
        print(f"  {name:10s} p50 {statistics.median(ms):5.2f} ms   "
              f"p95 {ms[int(len(ms) * 0.95)]:5.2f} ms")


if __name__ == "__main__":
    main()
