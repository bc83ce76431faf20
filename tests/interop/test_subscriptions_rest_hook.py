"""Rest-hook subscriptions against a real HTTP receiver (uvicorn on a free port): the
handshake makes the subscription active, notifications arrive in event order, a receiver that
is stopped for a while and restarted gets every event it missed, in order, and an endpoint
that answers 500 or times out is retried without holding up anyone else. Retry delays are
shortened (1 s doubling to 2 s) so that the outage fits in a test."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.testclient import TestClient

from sonobridge.app.compose import open_app_core
from sonobridge.app.server import create_app
from sonobridge.core.subscriptions import attach, service_of
from sonobridge.core.subscriptions.model import TIMEOUT
from sonobridge.core.subscriptions.service import Subscriptions
from sonobridge.fhir.resthook import RestHookSender
from tests.core.test_subscriptions import subscription
from tests.fhir.helpers import body, post, put
from tests.live import free_port


class Receiver:
    """A notification receiver: records what each path receives; per path it may answer
    ``ok`` (200), ``fail`` (500) or ``slow`` (sleeps, then 200)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.modes: dict[str, str] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.slow = 5.0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def app(self, scope: dict[str, Any], receive: Callable[..., Any],
                  send: Callable[..., Any]) -> None:
        assert scope["type"] == "http"
        data = b""
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        mode = self.modes.get(path, "ok")
        if mode == "slow":
            await asyncio.sleep(self.slow)
        status = 500 if mode == "fail" else 200
        if status == 200:
            self.received.setdefault(path, []).append(orjson.loads(data))
            self.headers[path] = {k.decode(): v.decode() for k, v in scope["headers"]}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                log_level="error", lifespan="off", interface="asgi3")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)


def kinds(bundles: list[dict[str, Any]]) -> list[str]:
    return [_param(b, "type")["valueCode"] for b in bundles]


def _param(bundle: dict[str, Any], name: str) -> dict[str, Any]:
    status = bundle["entry"][0]["resource"]
    return next(p for p in status["parameter"] if p["name"] == name)


def event_numbers(bundles: list[dict[str, Any]]) -> list[int]:
    out = []
    for bundle in bundles:
        status = bundle["entry"][0]["resource"]
        for p in status["parameter"]:
            if p["name"] == "notification-event":
                out.append(int(p["part"][0]["valueString"]))
    return out


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def hooks(settings) -> Iterator[tuple[TestClient, Subscriptions, RestHookSender]]:
    settings = dataclasses.replace(settings, load_sample=False,
                                   subscription_allow_private=True)
    core = open_app_core(settings, run_migrations=False)
    if service_of(core) is None:
        attach(core)
    service = service_of(core)
    assert service is not None
    # One request started at a time: a slow endpoint must still not hold up the others.
    sender = RestHookSender(service, concurrency=1, interval=0.2, first_delay=1, max_delay=2)
    sender.start()
    with TestClient(create_app(settings, core), base_url="http://sono.test",
                    client=("127.0.0.1", 50000)) as client:
        yield client, service, sender
    sender.stop()
    core.close()


def _task(client: TestClient, tid: str, status: str = "requested") -> None:
    r = put(client, f"/fhir/Task/{tid}", {"resourceType": "Task", "id": tid, "status": status,
                                           "intent": "order",
                                           "for": {"reference": "Patient/p1"}})
    assert r.status_code in (200, 201), r.text


def test_handshake_order_outage_and_restart(hooks):
    client, service, _ = hooks
    receiver = Receiver()
    receiver.start()
    try:
        sub = subscription(endpoint=receiver.url("/a"), content="full-resource")
        sub["channel"]["header"] = ["Authorization: Bearer receiver-secret"]
        sid = body(post(client, "/fhir/Subscription", sub))["id"]
        wait_for(lambda: len(receiver.received.get("/a", [])) >= 1, what="the handshake")
        handshake = receiver.received["/a"][0]
        assert handshake["type"] == "history" and kinds([handshake]) == ["handshake"]
        assert receiver.headers["/a"]["authorization"] == "Bearer receiver-secret"
        assert receiver.headers["/a"]["content-type"] == "application/fhir+json"
        wait_for(lambda: body(client.get(f"/fhir/Subscription/{sid}"))["status"] == "active",
                 what="active")
        history = body(client.get(f"/fhir/Subscription/{sid}/_history"))
        assert [e["resource"]["status"] for e in history["entry"]] == ["active", "requested"]

        for i in range(3):
            _task(client, f"t{i}")
        wait_for(lambda: event_numbers(receiver.received["/a"]) == [1, 2, 3], what="1..3")
        notes = [b for b in receiver.received["/a"] if kinds([b]) == ["event-notification"]]
        first = notes[0]
        assert first["entry"][1]["resource"]["resourceType"] == "Task"
        assert first["entry"][1]["fullUrl"] == f"http://sono.test/fhir/Task/{first['entry'][1]['resource']['id']}"
        assert _param(first, "subscription")["valueReference"]["reference"] == \
            f"http://sono.test/fhir/Subscription/{sid}"

        receiver.stop()  # the receiver goes away ...
        for i in range(3, 8):
            _task(client, f"t{i}")
        wait_for(lambda: service.queue.channel(sid).attempts >= 2, what="retries")
        row = service.queue.channel(sid)
        assert row.status in ("retry", "sending") and row.delivered == 3 and row.events == 8
        status = body(client.get(f"/fhir/Subscription/{sid}/$status"))["entry"][0]["resource"]
        assert {p["name"]: p for p in status["parameter"]}["status"]["valueCode"] == "error"

        receiver = Receiver(receiver.port)  # ... and comes back on the same address
        receiver.received = {"/a": []}
        receiver.start()
        wait_for(lambda: event_numbers(receiver.received["/a"]) == [4, 5, 6, 7, 8],
                 what="4..8 after the restart")
        wait_for(lambda: service.queue.channel(sid).status == "idle", what="idle")
        assert service.queue.channel(sid).delivered == 8
    finally:
        receiver.stop()


def test_failing_and_slow_endpoints_never_hold_up_others(hooks):
    client, service, _ = hooks
    receiver = Receiver()
    receiver.modes = {"/fail": "fail", "/slow": "slow"}
    receiver.slow = 4.0
    receiver.start()
    try:
        good = body(post(client, "/fhir/Subscription",
                         subscription(endpoint=receiver.url("/good"))))["id"]
        failing = body(post(client, "/fhir/Subscription",
                            subscription(endpoint=receiver.url("/fail"))))["id"]
        slow_sub = subscription(endpoint=receiver.url("/slow"))
        slow_sub["channel"]["extension"] = [{"url": TIMEOUT, "valueUnsignedInt": 1}]
        slow = body(post(client, "/fhir/Subscription", slow_sub))["id"]
        wait_for(lambda: body(client.get(f"/fhir/Subscription/{good}"))["status"] == "active",
                 what="the good one active")
        started = time.monotonic()
        for i in range(5):
            _task(client, f"t{i}")
        wait_for(lambda: event_numbers(receiver.received.get("/good", [])) == [1, 2, 3, 4, 5],
                 timeout=10, what="the good subscriber's events")
        assert time.monotonic() - started < 8
        wait_for(lambda: service.queue.channel(failing).attempts >= 2, what="500 retried")
        row = service.queue.channel(failing)
        assert row.phase == "handshake" and "HTTP 500" in row.error
        wait_for(lambda: (service.queue.channel(slow).error or "").count("Timeout") > 0,
                 what="the timeout recorded")
        assert body(client.get(f"/fhir/Subscription/{failing}"))["status"] == "requested"
        assert "/fail" not in receiver.received
    finally:
        receiver.stop()


def test_a_handshake_that_keeps_failing_ends_in_error(settings):
    settings = dataclasses.replace(settings, load_sample=False,
                                   subscription_allow_private=True)
    core = open_app_core(settings, run_migrations=False)
    if service_of(core) is None:
        attach(core)
    service = service_of(core)
    sender = RestHookSender(service, interval=0.1, first_delay=0, max_delay=0,
                            handshake_attempts=2)
    sender.start()
    try:
        with TestClient(create_app(settings, core), base_url="http://sono.test") as client:
            # Nobody listens on this port.
            sid = body(post(client, "/fhir/Subscription", subscription(
                endpoint=f"http://127.0.0.1:{free_port()}/x")))["id"]
            wait_for(lambda: body(client.get(f"/fhir/Subscription/{sid}"))["status"]
                     == "error", what="error")
            assert service.queue.channel(sid).status == "off"
            _task(client, "t1")
            assert service.queue.channel(sid).events == 0
    finally:
        sender.stop()
        core.close()


def test_heartbeats_while_idle(hooks):
    client, service, _ = hooks
    receiver = Receiver()
    receiver.start()
    try:
        sid = body(post(client, "/fhir/Subscription", subscription(
            endpoint=receiver.url("/hb"), heartbeat=1)))["id"]
        wait_for(lambda: kinds(receiver.received.get("/hb", [])).count("heartbeat") >= 2,
                 timeout=10, what="two heartbeats")
        assert kinds(receiver.received["/hb"])[0] == "handshake"
        assert service.queue.channel(sid).delivered == 0
    finally:
        receiver.stop()
