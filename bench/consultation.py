"""A consultation Task transition with its Provenance (and whatever else listens: the audit
trail, subscription notifications), timed over HTTP against a real ``sonobridge serve`` on
SQLite. Target (issue 13): p95 <= 20 ms.

    .venv/bin/python bench/consultation.py [--n 400] [--tasks 20] [--audit on|off]
                                           [--subscribers 1] [--database-url URL]

Each transition is a JSON Patch of ``status`` + ``businessStatus`` by the dispatcher's path
分诊中 ↔ 已排期 (the step to 已排期 searches for the request's Appointment, so both a rule with
a precondition and one without are measured). Peers measured in the same run, on the same
server: the same PATCH of a Task that is not a consultation Task (no workflow, no Provenance),
and a plain read of the Task — what the workflow costs is the difference.

``--subscribers K`` rest-hook Subscriptions on the ``consultation-task-changed`` topic (to a
local receiver that answers 200) make every transition queue K notifications in its
transaction, as the issue's target asks ("with its Provenance and notifications queued").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, start, stop

STATES = "http://sonobridge.org/fhir/CodeSystem/sono-consultation-business-status"
PATCH = {"Content-Type": "application/json-patch+json"}


def seed(http: httpx.Client, tasks: int) -> None:
    def put(resource: dict) -> None:
        r = http.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.text

    put({"resourceType": "Patient", "id": "bench-p"})
    for i in range(tasks):
        put({"resourceType": "ServiceRequest", "id": f"bench-sr{i}", "status": "active",
             "intent": "order", "subject": {"reference": "Patient/bench-p"}})
        put({"resourceType": "Appointment", "id": f"bench-a{i}", "status": "booked",
             "basedOn": [{"reference": f"ServiceRequest/bench-sr{i}"}],
             "participant": [{"actor": {"reference": "Patient/bench-p"},
                              "status": "accepted"}]})
        # anonymously (authorization off) it walks from the start, as a client would
        task = {"resourceType": "Task", "id": f"bench-t{i}", "intent": "order",
                "basedOn": [{"reference": f"ServiceRequest/bench-sr{i}"}],
                "for": {"reference": "Patient/bench-p"},
                "authoredOn": "2026-12-03T09:00:00+08:00"}
        for status, code in (("draft", "draft"), ("requested", "pending-local-review"),
                             ("received", "pending-acceptance"), ("accepted", "accepted"),
                             ("accepted", "triage")):
            put({**task, "status": status,
                 "businessStatus": {"coding": [{"system": STATES, "code": code}]}})
        put({**task, "id": f"plain-t{i}", "status": "accepted",
             "businessStatus": {"text": "not a consultation"}})


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def subscribe(http: httpx.Client, count: int, endpoint: str) -> None:
    """``count`` rest-hook Subscriptions on the consultation topic, waited for until active
    (the server's handshake reached the receiver)."""
    ids = []
    for _ in range(count):
        r = http.post("/fhir/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "bench",
            "criteria": "http://sonobridge.org/fhir/SubscriptionTopic/consultation-task-changed",
            "channel": {"type": "rest-hook", "endpoint": endpoint,
                        "payload": "application/fhir+json"}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    deadline = time.monotonic() + 60
    while any(http.get(f"/fhir/Subscription/{i}").json()["status"] != "active" for i in ids):
        assert time.monotonic() < deadline, "the subscriptions did not become active"
        time.sleep(0.2)


def patch(status: str, code: str | None) -> list[dict]:
    ops = [{"op": "replace", "path": "/status", "value": status}]
    if code is not None:
        ops.append({"op": "replace", "path": "/businessStatus/coding/0/code", "value": code})
    return ops


def figures(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return (f"{name:<44} n={len(samples):<5} p50 {statistics.median(samples):6.2f} ms  "
            f"p95 {p95:6.2f} ms  p99 {p99:6.2f} ms")


def cpu_ms(pid: int) -> float:
    """User + system CPU the server process has used: its work, which a machine shared with
    other jobs does not inflate as it inflates wall-clock latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def run(base: str, pid: int, n: int, tasks: int, subscribers: int, endpoint: str
        ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Three phases of ``n`` requests each (after a warm-up): transitions, the plain PATCH
    peer, the read peer; latency per request and server CPU per request for each."""
    out: dict[str, list[float]] = {"transition": [], "plain": [], "read": []}
    cpu: dict[str, float] = {}
    scheduled = [False] * tasks
    with httpx.Client(base_url=base, timeout=30) as http:
        seed(http, tasks)
        if subscribers:
            subscribe(http, subscribers, endpoint)

        def transition(k: int) -> httpx.Response:
            i = k % tasks
            target = ("accepted", "triage") if scheduled[i] else ("ready", "scheduled")
            scheduled[i] = not scheduled[i]
            return http.patch(f"/fhir/Task/bench-t{i}", json=patch(*target), headers=PATCH)

        def plain(k: int) -> httpx.Response:
            status = ("ready", None) if (k // tasks) % 2 else ("accepted", None)
            return http.patch(f"/fhir/Task/plain-t{k % tasks}", json=patch(*status),
                              headers=PATCH)

        def read(k: int) -> httpx.Response:
            return http.get(f"/fhir/Task/bench-t{k % tasks}")

        for name, call in (("transition", transition), ("plain", plain), ("read", read)):
            for k in range(2 * tasks):  # warm-up
                assert call(k).status_code == 200
            before = cpu_ms(pid)
            for k in range(n):
                t0 = time.perf_counter()
                r = call(k)
                out[name].append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
            cpu[name] = (cpu_ms(pid) - before) / n
        provenances = http.get("/fhir/Provenance", params={
            "target": "Task/bench-t0", "_summary": "count"}).json()["total"]
        assert provenances >= 5 + (n + 2 * tasks) // tasks, provenances
    return out, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--audit", choices=("on", "off"), default="on")
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/notify"
        env = {"SONOBRIDGE_DATA_DIR": work, "SONOBRIDGE_AUDIT": args.audit,
               "SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE": "1"}
        if args.database_url:
            env["SONOBRIDGE_DATABASE_URL"] = args.database_url
        proc = start(["-m", "sonobridge", "serve", "--no-sample", "--port", str(port)], env,
                     f"http://127.0.0.1:{port}/healthz", Path(work) / "server.log")
        try:
            out, cpu = run(f"http://127.0.0.1:{port}", proc.pid, args.n, args.tasks,
                           args.subscribers, endpoint)
        finally:
            stop(proc)
            receiver.shutdown()
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"consultation Task transitions over HTTP, {db}, audit {args.audit}, "
          f"{args.tasks} Tasks, {args.subscribers} subscriber(s) on the topic, one client")
    print(figures("PATCH transition (+ Provenance, notifications)", out["transition"]),
          f" server CPU {cpu['transition']:.2f} ms")
    print(figures("PATCH of a non-consultation Task (peer)", out["plain"]),
          f" server CPU {cpu['plain']:.2f} ms")
    print(figures("GET of the Task (peer)", out["read"]), f" server CPU {cpu['read']:.2f} ms")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    p95 = sorted(out["transition"])[int(0.95 * (len(out["transition"]) - 1))]
    print(f"target p95 <= 20 ms: {'met' if p95 <= 20 else 'NOT met'} ({p95:.2f} ms)")


if __name__ == "__main__":
    main()
