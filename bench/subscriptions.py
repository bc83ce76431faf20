"""Subscriptions benchmark: 1,000 rest-hook subscribers on one topic, fan-out to a local
receiver.

    .venv/bin/python bench/subscriptions.py [--subscribers 1000] [--changes 5]
                                            [--concurrency 4] [--postgres URL]

1. ``--subscribers`` Subscriptions to ``consultation-task-changed`` (id-only), all pointing at
   one receiver (uvicorn, a raw ASGI app answering 200, in its own process so that it does
   not share the sender's interpreter); their handshakes are the first fan-out.
2. ``--changes`` Task updates, one after the other: each triggers one event per subscriber,
   recorded in the update's transaction (the update's time with 1,000 events queued is
   printed), then delivered by the rest-hook sender; the time until every subscriber has it
   gives deliveries/s.

The sender runs in this process as ``sonobridge serve`` runs it (one asyncio loop, an HTTP
client, ``--concurrency`` requests started at once). SQLite by default (a temporary directory);
``--postgres URL`` runs on a fresh schema of that server.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from sonobridge.app.compose import open_app_core
from sonobridge.config import Settings
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.subscriptions import service_of
from sonobridge.core.subscriptions.model import PAYLOAD_CONTENT
from sonobridge.fhir.resthook import RestHookSender
from sonobridge.store.tables import subscription_channels as C

sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, fresh_postgres_url, stop

TOPIC = "http://sonobridge.org/fhir/SubscriptionTopic/consultation-task-changed"

RECEIVER = textwrap.dedent("""
    import sys, uvicorn
    count = 0
    async def app(scope, receive, send):
        global count
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        count += 1
        body = str(count).encode() if scope["path"] == "/count" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
                access_log=False, lifespan="off", interface="asgi3")
""")


def wait_delivered(core, target: int, deadline: float) -> float:
    """Seconds until every subscription has delivered ``target`` events (handshake: 0 and
    phase active)."""
    start = time.perf_counter()
    from sqlalchemy import func, select

    while True:
        with core.engine.connect() as conn:
            waiting = conn.execute(select(func.count()).select_from(C).where(
                (C.c.delivered < target) | (C.c.phase != "active"))).scalar_one()
        if waiting == 0:
            return time.perf_counter() - start
        if time.perf_counter() - start > deadline:
            raise SystemExit(f"{waiting} subscriptions still waiting after {deadline} s")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="PostgreSQL server to run on (a fresh schema, dropped after)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sonobridge-bench-subs-"))
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/count", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    database_url, cleanup = None, None
    if args.postgres:
        database_url, cleanup = fresh_postgres_url(args.postgres)
    settings = Settings(data_dir=work, database_url=database_url, auth="disabled",
                        audit=False, load_sample=False, subscription_allow_private=True)
    core = open_app_core(dataclasses.replace(settings))
    service = service_of(core)
    assert service is not None, "sonobridge.core.subscriptions is not in DOMAINS"
    caller = Caller(Policy.open(), settings.public_base)
    endpoint = f"http://127.0.0.1:{port}/hook"
    print(f"database: {core.engine.dialect.name}; {args.subscribers} subscribers, "
          f"concurrency {args.concurrency}")

    started = time.perf_counter()
    for i in range(args.subscribers):
        core.resources.create(caller, "Subscription", {
            "resourceType": "Subscription", "status": "requested", "reason": f"bench {i}",
            "criteria": TOPIC, "channel": {
                "type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "id-only"}]}}})
    print(f"created {args.subscribers} Subscriptions in {time.perf_counter() - started:.1f} s")

    sender = RestHookSender(service, concurrency=args.concurrency, interval=0.05)
    sender.start()
    try:
        seconds = wait_delivered(core, 0, 300)
        print(f"handshakes: {args.subscribers} in {seconds:.2f} s = "
              f"{args.subscribers / seconds:.0f} deliveries/s (each followed by a Subscription "
              "update to active)")
        core.resources.create(caller, "Task", {"resourceType": "Task", "id": "bench",
                                                "status": "requested", "intent": "order"})
        wait_delivered(core, 1, 300)
        rates, writes = [], []
        statuses = ["received", "accepted", "ready", "in-progress", "completed"]
        for n in range(args.changes):
            body = {"resourceType": "Task", "id": "bench", "intent": "order",
                    "status": statuses[n % len(statuses)], "note": [{"text": str(n)}]}
            t0 = time.perf_counter()
            core.resources.update(caller, "Task", "bench", body)
            writes.append(time.perf_counter() - t0)
            seconds = wait_delivered(core, n + 2, 300)
            rates.append(args.subscribers / seconds)
            print(f"change {n + 1}: update with {args.subscribers} events queued "
                  f"{writes[-1] * 1000:.0f} ms; fan-out {seconds:.2f} s = "
                  f"{rates[-1]:.0f} deliveries/s")
        print(f"fan-out: median {statistics.median(rates):.0f} deliveries/s, min "
              f"{min(rates):.0f}; update with events queued: median "
              f"{statistics.median(writes) * 1000:.0f} ms")
        received = int(httpx.get(f"http://127.0.0.1:{port}/count", timeout=5).text) - 1
        expected = args.subscribers * (args.changes + 2)
        print(f"receiver got {received} notifications (expected {expected})")
    finally:
        sender.stop()
        core.close()
        stop(receiver)
        if cleanup is not None:
            cleanup()


if __name__ == "__main__":
    main()
