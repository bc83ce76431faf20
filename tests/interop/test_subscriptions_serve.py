"""``sonobridge serve`` as deployed (a process of its own, settings from the environment):
its lifespan starts the rest-hook sender, ``SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE=1`` lets it
reach a receiver on loopback, and the CapabilityStatement advertises the topics."""

from __future__ import annotations

import httpx
import orjson

from tests.core.test_subscriptions import subscription
from tests.interop.test_subscriptions_rest_hook import Receiver, event_numbers, kinds, wait_for
from tests.live import serve

FHIR = {"Content-Type": "application/fhir+json"}


def test_serve_delivers_rest_hooks(tmp_path):
    receiver = Receiver()
    receiver.start()
    try:
        with serve(f"sqlite:///{tmp_path / 's.db'}", tmp_path, "--no-sample",
                   SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE="1") as (base, _log), \
                httpx.Client(base_url=f"{base}/fhir", timeout=10) as http:
            cs = http.get("/metadata").json()
            entry = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Subscription")
            assert len(entry["extension"]) == 4
            r = http.post("/Subscription", headers=FHIR, content=orjson.dumps(
                subscription(endpoint=receiver.url("/serve"))))
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            wait_for(lambda: http.get(f"/Subscription/{sid}").json()["status"] == "active",
                     what="the handshake")
            r = http.post("/Task", headers=FHIR, content=orjson.dumps(
                {"resourceType": "Task", "status": "requested", "intent": "order"}))
            assert r.status_code == 201
            wait_for(lambda: event_numbers(receiver.received.get("/serve", [])) == [1],
                     what="the event")
            assert kinds(receiver.received["/serve"]) == ["handshake", "event-notification"]
            focus = receiver.received["/serve"][1]["entry"][1]["fullUrl"]
            assert focus == f"{base}/fhir/Task/{r.json()['id']}"
    finally:
        receiver.stop()


def test_serve_refuses_loopback_endpoints_by_default(tmp_path):
    with serve(f"sqlite:///{tmp_path / 's.db'}", tmp_path, "--no-sample") as (base, _log):
        r = httpx.post(f"{base}/fhir/Subscription", headers=FHIR, content=orjson.dumps(
            subscription(endpoint="http://127.0.0.1:9/hook")), timeout=10)
        assert r.status_code == 422, r.text
        assert r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
