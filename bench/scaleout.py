"""Three gateway processes on PostgreSQL + S3 (moto) behind haproxy: the mixed load's throughput
and p95, and WADO-RS frames against one worker — the scale-out figures of docs/performance.md.

Each process runs with the default settings (audit on; auth off so no token is needed). The
load is four client threads for ``--seconds``: STOW-RS of small cines, WADO-RS frames of what
was stored, FHIR transactions (one Patient each), HL7 ORM^O01 orders over MLLP to the
elected listener.

    .venv/bin/python bench/scaleout.py                 # 30 s, PostgreSQL on 127.0.0.1
    .venv/bin/python bench/scaleout.py --seconds 60 --postgres postgresql://postgres@db/test
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dicom_data import cines, render
from _server import free_port, fresh_postgres_url

BOUNDARY = "bench-scale"
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def wait(url: str, proc: subprocess.Popen | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    database, drop = fresh_postgres_url(args.postgres)
    _, jpeg = render(480, 640, 10)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as work:
        try:
            moto_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H",
                                           "127.0.0.1", "-p", str(moto_port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            endpoint = f"http://127.0.0.1:{moto_port}"
            wait(endpoint)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            httpx.put(f"{endpoint}/{bucket}").raise_for_status()
            mllp_port = free_port()
            env = {**os.environ, "SONOBRIDGE_DATABASE_URL": database,
                   "SONOBRIDGE_BLOB_URL": f"s3://{bucket}/gw?endpoint={endpoint}&region=x",
                   "SONOBRIDGE_AUTH": "disabled", "SONOBRIDGE_MLLP_PORT": str(mllp_port),
                   "SONOBRIDGE_DICOM_PORT": "0"}
            ports = []
            for n in range(3):
                port = free_port()
                log = open(f"{work}/gw{n}.log", "wb")  # noqa: SIM115
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "sonobridge", "serve", "--port", str(port),
                     "--no-sample"], env={**env, "SONOBRIDGE_DATA_DIR": f"{work}/gw{n}"},
                    stdout=log, stderr=subprocess.STDOUT))
                wait(f"http://127.0.0.1:{port}/healthz", procs[-1])
                ports.append(port)
            front = free_port()
            servers = "\n".join(f"    server gw{n} 127.0.0.1:{p} check"
                                for n, p in enumerate(ports))
            Path(f"{work}/haproxy.cfg").write_text(
                f"defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n"
                f"    timeout server 60s\nfrontend f\n    bind 127.0.0.1:{front}\n"
                f"    default_backend b\nbackend b\n    balance roundrobin\n{servers}\n")
            procs.append(subprocess.Popen(["haproxy", "-f", f"{work}/haproxy.cfg"]))
            base = f"http://127.0.0.1:{front}"
            wait(f"{base}/healthz")
            results = run_load(base, ports[0], mllp_port, jpeg, args.seconds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            drop()
    print(f"3 workers on PostgreSQL + S3 (moto) behind haproxy, {args.seconds:.0f} s, "
          "4 client threads")
    for name, times in results.items():
        if not times:
            continue
        ms = sorted(t * 1000 for t in times)
        print(f"  {name:28s} {len(ms) / args.seconds:7.1f} /s   p50 {statistics.median(ms):6.1f}"
              f" ms   p95 {ms[int(len(ms) * 0.95)]:6.1f} ms")


def run_load(base: str, one_worker: int, mllp_port: int, jpeg: list[bytes], seconds: float
             ) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"STOW-RS (2-frame cine)": [],
                                       "WADO-RS frame (via haproxy)": [],
                                       "WADO-RS frame (one worker)": [],
                                       "FHIR transaction": [], "HL7 ORM^O01 (MLLP)": []}
    stored: list = []
    stop = time.monotonic() + seconds

    def stow() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < stop:
                [instance] = cines(1, jpeg[:2], 480, 640)
                body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        + instance.data + f"\r\n--{BOUNDARY}--\r\n".encode())
                started = time.perf_counter()
                r = http.post("/dicomweb/studies", content=body, headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                                    f"boundary={BOUNDARY}", "Accept": "application/dicom+json"})
                if r.status_code == 200:
                    results["STOW-RS (2-frame cine)"].append(time.perf_counter() - started)
                    stored.append(instance)

    def frames() -> None:
        with httpx.Client(timeout=60) as http:
            n = 0
            while time.monotonic() < stop:
                if not stored:
                    time.sleep(0.1)
                    continue
                n += 1
                instance = stored[n % len(stored)]
                for name, root in (("via haproxy", base),
                                   ("one worker", f"http://127.0.0.1:{one_worker}")):
                    started = time.perf_counter()
                    r = http.get(f"{root}/dicomweb/studies/{instance.study}/series/"
                                 f"{instance.series}/instances/{instance.sop}/frames/"
                                 f"{1 + n % 2}", headers={"Accept": FRAMES})
                    if r.status_code == 200:
                        results[f"WADO-RS frame ({name})"].append(time.perf_counter() - started)

    def transactions() -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while time.monotonic() < stop:
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
                    "resource": {"resourceType": "Patient", "identifier": [
                        {"system": "urn:bench", "value": uuid.uuid4().hex}]},
                    "request": {"method": "POST", "url": "Patient"}}]}
                started = time.perf_counter()
                r = http.post("/fhir", json=bundle,
                              headers={"Content-Type": "application/fhir+json"})
                if r.status_code == 200:
                    results["FHIR transaction"].append(time.perf_counter() - started)

    def orders() -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            message = "\r".join([
                f"MSH|^~\\&|HIS|H|SONO|S|20261203||ORM^O01|B{n}|P|2.5.1",
                f"PID|1||B-{n}^^^H^MR||Bench^{n}", f"ORC|NW|BP{n}|BF{n}||SC",
                f"OBR|1|BP{n}|BF{n}|US-ABD^US ABDOMEN^L"]) + "\r"
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", mllp_port), timeout=30) as sock:
                sock.sendall(b"\x0b" + message.encode() + b"\x1c\r")
                reply = b""
                while not reply.endswith(b"\x1c\r"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            if b"MSA|AA" in reply:
                results["HL7 ORM^O01 (MLLP)"].append(time.perf_counter() - started)

    threads = [threading.Thread(target=f) for f in (stow, frames, transactions, orders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


if __name__ == "__main__":
    main()
