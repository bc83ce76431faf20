"""Three gateway processes on one PostgreSQL and one S3 server, behind haproxy: a mixed load
(STOW-RS, WADO-RS frames, FHIR transactions, HL7 orders over MLLP), the listeners' process
killed with SIGKILL in the middle. Every acknowledged write is there exactly once afterwards,
and another process takes the MLLP listener over within 10 s on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from sonobridge.store.db import make_engine
from tests.conftest import PG_URL, REQUIRE_PG, pg_reason
from tests.dicom_data import cine, to_bytes
from tests.live import free_port
from tests.s3 import make_bucket, moto_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy (Debian package) balances the workers")]

BOUNDARY = "scaleout"
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@pytest.fixture
def database() -> Iterator[str]:
    reason = pg_reason()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"sbscale_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


class Cluster:
    def __init__(self, work: Path, database: str, blob_url: str) -> None:
        self.work = work
        self.mllp_port = free_port()
        self.env = {**os.environ, "SONOBRIDGE_DATABASE_URL": database,
                    "SONOBRIDGE_BLOB_URL": blob_url, "SONOBRIDGE_AUTH": "disabled",
                    "SONOBRIDGE_MLLP_PORT": str(self.mllp_port),
                    "SONOBRIDGE_DICOM_PORT": "0"}
        self.procs: dict[int, subprocess.Popen] = {}  # http port -> process

    def start(self, count: int) -> None:
        for n in range(count):
            port = free_port()
            log = (self.work / f"gw{n}.log").open("wb")
            env = {**self.env, "SONOBRIDGE_DATA_DIR": str(self.work / f"gw{n}")}
            self.procs[port] = subprocess.Popen(
                [sys.executable, "-m", "sonobridge", "serve", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
            self.wait_healthy(port)

    def wait_healthy(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.2)

    def leader(self) -> int:
        """The HTTP port of the process that runs the listeners (it says so in its log)."""
        for n, port in enumerate(self.procs):
            log = (self.work / f"gw{n}.log").read_text(errors="replace")
            if "runs the listeners" in log and self.procs[port].poll() is None:
                return port
        raise AssertionError("no process runs the listeners:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-1500:]
                         for p in sorted(self.work.glob("gw*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _haproxy(work: Path, ports: list[int]) -> tuple[subprocess.Popen, int]:
    front = free_port()
    servers = "\n".join(f"    server gw{n} 127.0.0.1:{p} check inter 300ms fall 1 rise 2"
                        for n, p in enumerate(ports))
    cfg = work / "haproxy.cfg"
    cfg.write_text(f"""
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend gateway
    bind 127.0.0.1:{front}
    default_backend workers
backend workers
    balance roundrobin
    option httpchk GET /healthz
    retry-on conn-failure empty-response
    retries 2
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{front}/healthz", timeout=1).raise_for_status()
            return proc, front
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.2)


def _mllp(port: int, message: str, timeout: float = 10) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        reply = b""
        while not reply.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the ACK")
            reply += chunk
    return reply.decode()


def _order(n: int) -> str:
    return "\r".join([
        f"MSH|^~\\&|HIS|COUNTY|USSRV|TELEUS|20261203093000||ORM^O01|SC{n}|P|2.5.1",
        f"PID|1||SC-{n}^^^COUNTY^MR||Scale^Out{n}||19700101|M",
        f"ORC|NW|SP{n}|SF{n}||SC", f"OBR|1|SP{n}|SF{n}|US-ABD^US ABDOMEN^L"]) + "\r"


def test_three_workers_lose_nothing_when_one_is_killed(tmp_path: Path, database: str,
                                                       moto_server: str):  # noqa: F811
    bucket = make_bucket(moto_server)
    cluster = Cluster(tmp_path, database, f"s3://{bucket}/gw?endpoint={moto_server}"
                                          "&region=us-east-1")
    cluster.start(3)
    proxy, front = _haproxy(tmp_path, list(cluster.procs))
    base = f"http://127.0.0.1:{front}"
    acked: dict[str, list[str]] = {"stow": [], "patient": [], "order": []}
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def stow_and_read() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                ds = cine("native", frames=2, seed=n)
                body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        + to_bytes(ds) + f"\r\n--{BOUNDARY}--\r\n".encode())
                try:
                    r = http.post("/dicomweb/studies", content=body, headers={
                        "Content-Type": f'multipart/related; type="application/dicom"; '
                                        f"boundary={BOUNDARY}",
                        "Accept": "application/dicom+json"})
                except httpx.HTTPError as exc:
                    errors.append(f"stow: {exc}")
                    continue
                if r.status_code == 200:
                    with lock:
                        acked["stow"].append(ds.SOPInstanceUID)
                    try:  # a read in flight on the worker that is killed fails; count it
                        frame = http.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                                         f"{ds.SeriesInstanceUID}/instances/"
                                         f"{ds.SOPInstanceUID}/frames/2",
                                         headers={"Accept": FRAMES})
                    except httpx.HTTPError as exc:
                        errors.append(f"frame: {exc}")
                        continue
                    if frame.status_code != 200:
                        errors.append(f"frame: {frame.status_code}")

    def transactions() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                ident = f"SCALE-{n}-{uuid.uuid4().hex[:6]}"
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": {"resourceType": "Patient", "identifier": [
                        {"system": "urn:scaleout", "value": ident}]},
                    "request": {"method": "POST", "url": "Patient",
                                "ifNoneExist": f"identifier=urn:scaleout|{ident}"}}]}
                try:
                    r = http.post("/fhir", json=bundle,
                                  headers={"Content-Type": "application/fhir+json"})
                except httpx.HTTPError as exc:
                    errors.append(f"transaction: {exc}")
                    continue
                if r.status_code == 200:
                    with lock:
                        acked["patient"].append(ident)

    def orders() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                ack = _mllp(cluster.mllp_port, _order(n), timeout=5)
            except OSError as exc:
                errors.append(f"mllp: {exc}")
                time.sleep(0.2)
                continue
            if "MSA|AA" in ack:
                with lock:
                    acked["order"].append(f"SF{n}")

    threads = [threading.Thread(target=f) for f in (stow_and_read, transactions, orders)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(6)
        leader = cluster.leader()
        before = {k: len(v) for k, v in acked.items()}
        cluster.procs[leader].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        # Another process takes the MLLP listener over on the same port.
        while True:
            try:
                assert "MSA|AA" in _mllp(cluster.mllp_port, _order(100_000), timeout=5)
                break
            except OSError:
                assert time.monotonic() - killed_at < 10, "no takeover within 10 s\n" + \
                    cluster.logs()
                time.sleep(0.2)
        takeover = time.monotonic() - killed_at
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    try:
        assert all(len(acked[k]) > before[k] for k in acked), (before, acked)
        with httpx.Client(base_url=base, timeout=30) as http:
            for uid in acked["stow"]:
                found = http.get("/dicomweb/instances", params={"SOPInstanceUID": uid},
                                 headers={"Accept": "application/dicom+json"})
                assert found.status_code == 200 and len(found.json()) == 1, uid
            for ident in acked["patient"]:
                bundle = http.get("/fhir/Patient", params={
                    "identifier": f"urn:scaleout|{ident}", "_summary": "count"}).json()
                assert bundle["total"] == 1, ident
            for placer in acked["order"]:
                bundle = http.get("/fhir/ServiceRequest", params={
                    "identifier": placer, "_summary": "count"}).json()
                assert bundle["total"] == 1, placer
        print(f"acknowledged: {({k: len(v) for k, v in acked.items()})}, takeover "
              f"{takeover:.1f} s, client errors during the kill: {len(errors)}")
    finally:
        proxy.terminate()
        proxy.wait(10)
        cluster.stop()
