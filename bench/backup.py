"""`sonobridge backup`, `verify` and `restore` of a data directory holding N GB of cines.

Cines of 800 x 600 JPEG frames (~10 MB each, fresh UIDs) are stored by STOW-RS into a
`sonobridge serve` process on its embedded default (SQLite + files, audit on); then, with the
server still running, `sonobridge backup` writes to a local directory, `sonobridge restore`
restores into an empty data directory and `sonobridge verify` hashes every restored blob. Each
step's wall time and throughput are printed.

    .venv/bin/python bench/backup.py --gb 2       # quick
    .venv/bin/python bench/backup.py --gb 10      # the issue's figure (needs ~35 GB free)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dicom_data import cines, render
from _server import free_port, start, stop

BOUNDARY = "bench-backup"


def _cli(args: list[str], data: Path) -> float:
    env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(data), "SONOBRIDGE_DATABASE_URL": "",
           "COLUMNS": "200"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sonobridge", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=2.0)
    args = parser.parse_args()
    _, jpeg = render(600, 800, 60)
    frames = [jpeg[i % len(jpeg)] for i in range(120)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as work:
        data = Path(work) / "data"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"],
                     {"SONOBRIDGE_DATA_DIR": str(data), "SONOBRIDGE_AUDIT": "on"},
                     f"{base}/healthz", Path(work) / "server.log")
        stored = 0
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                while stored < args.gb * 1e9:
                    batch = cines(10, frames, 600, 800)
                    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n"
                                    .encode() + i.data + b"\r\n" for i in batch) \
                        + f"--{BOUNDARY}--\r\n".encode()
                    http.post("/dicomweb/studies", content=body, headers={
                        "Content-Type": f'multipart/related; type="application/dicom"; '
                                        f"boundary={BOUNDARY}",
                        "Accept": "application/dicom+json"}).raise_for_status()
                    stored += sum(len(i.data) for i in batch)
            print(f"stored {stored / 1e9:.2f} GB of cines", flush=True)
            backup = _cli(["backup", f"{work}/bk"], data)  # online: the server still runs
        finally:
            stop(proc)
        restored = Path(work) / "restored"
        restore = _cli(["restore", f"{work}/bk"], restored)
        verify = _cli(["verify"], restored)
    gb = stored / 1e9
    print(f"backup (online, hashes checked):  {backup:6.1f} s  {gb * 1000 / backup:6.0f} MB/s")
    print(f"restore (manifest checked first): {restore:6.1f} s  {gb * 1000 / restore:6.0f} MB/s")
    print(f"verify (every blob hashed):       {verify:6.1f} s  {gb * 1000 / verify:6.0f} MB/s")


if __name__ == "__main__":
    main()
