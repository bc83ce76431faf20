"""The websocket channel with a real client (the ``websockets`` package) against SonoBridge
served by uvicorn on a free port: ``$get-ws-binding-token``, ``bind-with-token``, the
handshake, then each new event as a notification Bundle, in order; a forged or expired token
is refused."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sonobridge.app.compose import open_app_core
from sonobridge.app.server import create_app
from sonobridge.core.subscriptions import attach, service_of
from sonobridge.store.tables import subscription_channels
from tests.core.test_subscriptions import subscription
from tests.interop.test_subscriptions_rest_hook import event_numbers, kinds
from tests.live import free_port

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def served(settings) -> Iterator[tuple[str, object]]:
    settings = dataclasses.replace(settings, load_sample=False)
    core = open_app_core(settings, run_migrations=False)
    if service_of(core) is None:
        attach(core)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, core), host="127.0.0.1",
                                           port=port, log_level="error", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", core
    server.should_exit = True
    thread.join(10)


def _task(http: httpx.Client, tid: str, status: str = "requested") -> None:
    r = http.put(f"/fhir/Task/{tid}", content=orjson.dumps({
        "resourceType": "Task", "id": tid, "status": status, "intent": "order",
        "for": {"reference": "Patient/p1"}}), headers=FHIR)
    assert r.status_code in (200, 201), r.text


def test_bind_handshake_and_notifications(served):
    base, _core = served
    with httpx.Client(base_url=base, timeout=10) as http:
        r = http.post("/fhir/Subscription", headers=FHIR, content=orjson.dumps(
            subscription(channel="websocket", content="id-only")))
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        _task(http, "before")  # event 1: before the bind, read back with $events
        r = http.post(f"/fhir/Subscription/{sid}/$get-ws-binding-token")
        assert r.status_code == 200, r.text
        params = {p["name"]: p for p in r.json()["parameter"]}
        url = params["websocket-url"]["valueUrl"]
        assert url == f"{base.replace('http', 'ws')}/fhir/subscription-ws"
        with connect(url, open_timeout=10) as ws:
            ws.send(f"bind-with-token: {params['token']['valueString']}")
            handshake = orjson.loads(ws.recv(timeout=10))
            assert kinds([handshake]) == ["handshake"]
            assert http.get(f"/fhir/Subscription/{sid}").json()["status"] == "active"
            for i in range(3):
                _task(http, f"t{i}")
            received: list[dict] = []
            while event_numbers(received) != [2, 3, 4]:
                received.append(orjson.loads(ws.recv(timeout=10)))
                assert len(received) <= 3
            assert all(b["type"] == "history" for b in received)
            focus = [e["fullUrl"] for b in received for e in b["entry"][1:]]
            assert focus == [f"{base}/fhir/Task/t{i}" for i in range(3)]
        events = http.get(f"/fhir/Subscription/{sid}/$events",
                          params={"eventsUntilNumber": "1"}).json()
        assert event_numbers([events]) == [1]


def test_a_forged_or_expired_token_is_refused(served):
    base, core = served
    url = f"{base.replace('http', 'ws')}/fhir/subscription-ws"
    with connect(url, open_timeout=10) as ws:
        ws.send("bind-with-token: forged")
        refusal = orjson.loads(ws.recv(timeout=10))
        assert refusal["resourceType"] == "OperationOutcome"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with httpx.Client(base_url=base, timeout=10) as http:
        sid = http.post("/fhir/Subscription", headers=FHIR, content=orjson.dumps(
            subscription(channel="websocket"))).json()["id"]
        token = {p["name"]: p for p in http.post(
            f"/fhir/Subscription/{sid}/$get-ws-binding-token").json()["parameter"]}
        token = token["token"]["valueString"]
    with core.engine.begin() as conn:  # the token's lifetime has passed
        conn.execute(subscription_channels.update().values(token_expires=0))
    with connect(url, open_timeout=10) as ws:
        ws.send(f"bind-with-token: {token}")
        assert orjson.loads(ws.recv(timeout=10))["resourceType"] == "OperationOutcome"
    with connect(url, open_timeout=10) as ws:
        ws.send("hello")
        assert orjson.loads(ws.recv(timeout=10))["resourceType"] == "OperationOutcome"
