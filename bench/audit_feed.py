"""The ATNA audit feed: how many AuditMessages per second it delivers over TLS, and what it
costs the request path while it runs (issue 17: >= 1,000 messages/s over TLS without slowing
the request path).

    .venv/bin/python bench/audit_feed.py [--writes 1000] [--backlog 5000] [--database-url URL]

Runs twice, in one process: FHIR creates (each audited in its transaction) with the feed off,
then the same with the feed sending to a local TLS collector at the same time (the peer row:
the same work without the feed, measured in the same run). Prints p50/p95 of a create in
both, the feed's delivery while the creates run, and its capacity: a backlog of trail events
(as after the collector was away) drained, messages per second. The collector is a Python
TLS server that reads RFC 5425 frames; the certificates are made with ``openssl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _server import fresh_postgres_url

from sonobridge.config import Settings
from sonobridge.core.audit import Record
from sonobridge.core.services import Core, open_core
from sonobridge.hie.syslog import AuditFeedSender


def certificates(work: Path) -> None:
    (work / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], cwd=work, check=True,  # noqa: E731
                                    capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("collector", "node"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", f"{name}.pem")


class Collector:
    def __init__(self, work: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(work / "collector.pem", work / "collector.key")
        self.context.load_verify_locations(cafile=work / "ca.pem")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.last = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            raw, _ = self.sock.accept()
            conn = self.context.wrap_socket(raw, server_side=True)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: ssl.SSLSocket) -> None:
        buffer = b""
        while chunk := conn.recv(1 << 16):
            buffer += chunk
            while True:
                length, sep, rest = buffer.partition(b" ")
                if not sep or len(rest) < int(length):
                    break
                buffer = rest[int(length):]
                self.count += 1
                self.last = time.perf_counter()


def creates(core: Core, n: int) -> list[float]:
    took = []
    for i in range(n):
        began = time.perf_counter()
        core.resources.create(core.server, "Patient", {
            "resourceType": "Patient", "name": [{"family": f"王{i}"}]})
        took.append((time.perf_counter() - began) * 1000)
    return took


def line(name: str, took: list[float]) -> str:
    q = statistics.quantiles(took, n=20)
    return f"| {name} | {statistics.median(took):.2f} ms | {q[18]:.2f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        certificates(work)
        collector = Collector(work)
        cleanup = None
        if args.database_url:  # a schema of its own, dropped at the end
            url, cleanup = fresh_postgres_url(args.database_url)
        else:
            url = f"sqlite:///{work}/feed.db"
        settings = Settings(data_dir=work, database_url=url, audit=True, audit_read_window=0,
                            audit_feed=f"tls://127.0.0.1:{collector.port}",
                            audit_feed_cert="node.pem", audit_feed_key="node.key",
                            audit_feed_ca="ca.pem")
        core = open_core(dataclasses.replace(settings))
        creates(core, 100)  # warm-up
        without = creates(core, args.writes)
        sender = AuditFeedSender(core)
        sender.round()  # the cursor at the head: only what follows is sent
        sender.start()
        began = time.perf_counter()
        with_feed = creates(core, args.writes)
        deadline = time.monotonic() + 60
        while collector.count < args.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        sender.stop()
        rate = collector.count / (collector.last - began)
        # Capacity: a backlog of trail events (as after the collector was away) drained.
        backlog = [Record("rest", "R", "read", who="client-1", ip="127.0.0.1",
                          resource=f"Observation/o{i}", patient="Patient/p1")
                   for i in range(args.backlog)]
        for start in range(0, len(backlog), 500):
            with core.store.write() as writer:
                writer.pending_audit.extend(backlog[start:start + 500])
        drainer = AuditFeedSender(core)
        before = collector.count
        began = time.perf_counter()
        drainer.round()
        while collector.count < before + args.backlog and time.monotonic() < deadline + 60:
            time.sleep(0.005)
        drained = (collector.count - before) / (collector.last - began)
        drainer.stop()
        print(f"database: {core.engine.dialect.name}, {args.writes} audited creates per run")
        print("| FHIR create (audited) | p50 | p95 |\n| --- | --- | --- |")
        print(line("feed off (peer, same run)", without))
        print(line("feed on, sending over TLS", with_feed))
        print(f"while creating: {args.writes} messages delivered at {rate:,.0f}/s (first "
              "create to last message received: bounded by the creates)")
        print(f"backlog of {args.backlog} events drained at {drained:,.0f} messages/s")
        core.close()
        if cleanup is not None:
            cleanup()


if __name__ == "__main__":
    main()
