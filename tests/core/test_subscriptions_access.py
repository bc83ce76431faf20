"""Subscriptions with authorization on and real SMART tokens: a subscription hears only of
changes its owner (the token that wrote it) may read, ``$events`` shows the focus only when the
caller may read it, and a token without Subscription rights is refused."""

from __future__ import annotations

import orjson

from sonobridge.core.subscriptions import service_of
from sonobridge.core.subscriptions.service import policy_of
from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures
from tests.auth.smart import bearer
from tests.core.test_subscriptions import subscription

FHIR = {"Content-Type": "application/fhir+json"}


def _events(smart, sid: str, token: str):  # noqa: F811
    return smart.http.get(f"/fhir/Subscription/{sid}/$events", headers=bearer(token))


def test_events_bounded_by_the_token(smart):  # noqa: F811
    scoped = smart.system_token("system/Subscription.cruds system/Task.rs?patient=Patient/p1")
    r = smart.http.post("/fhir/Subscription", headers={**FHIR, **bearer(scoped)},
                        content=orjson.dumps(subscription(content="full-resource")))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    for tid, patient in (("t1", "p1"), ("t2", "p2")):
        smart.seed({"resourceType": "Task", "id": tid, "status": "requested",
                    "intent": "order", "for": {"reference": f"Patient/{patient}"}})
    service = service_of(smart.core)
    owner = policy_of(service.queue.channel(sid).owner)
    assert not owner.unrestricted and "Task.rs?patient=Patient/p1" in owner.raw_scope

    # p2's Task is outside the owner's rights: no event at all (not even its number).
    assert service.queue.counts([sid]) == {sid: 1}
    r = _events(smart, sid, scoped)
    assert r.status_code == 200, r.text
    bundle = r.json()
    parts = [p["part"] for p in bundle["entry"][0]["resource"]["parameter"]
             if p["name"] == "notification-event"]
    assert [len(p) for p in parts] == [3]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == ["t1"]

    # An unrestricted owner hears of both; reading its events with the scoped token shows
    # p2's event without its focus (the reader's rights apply to $events).
    wide = smart.system_token("system/*.cruds")
    r = smart.http.post("/fhir/Subscription", headers={**FHIR, **bearer(wide)},
                        content=orjson.dumps(subscription(content="full-resource")))
    wide_sid = r.json()["id"]
    for tid, patient in (("t1", "p1"), ("t2", "p2")):
        smart.seed({"resourceType": "Task", "id": tid, "status": "accepted",
                    "intent": "order", "for": {"reference": f"Patient/{patient}"}})
    assert service.queue.counts([sid, wide_sid]) == {sid: 2, wide_sid: 2}
    bundle = _events(smart, wide_sid, wide).json()
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == ["t1", "t2"]
    bundle = _events(smart, wide_sid, scoped).json()
    parts = [p["part"] for p in bundle["entry"][0]["resource"]["parameter"]
             if p["name"] == "notification-event"]
    assert [len(p) for p in parts] == [3, 2]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == ["t1"]
    # The notification the rest-hook sender builds uses the owner's recorded rights.
    row = service.queue.channel(sid)
    note = service.notification(sid, service.config_of(row.config), "event-notification",
                                2, service.queue.events(sid, 1, 2, 10), row.owner)
    assert [e["resource"]["id"] for e in note["entry"][1:]] == ["t1", "t1"]
    # No Subscription rights: refused; no token: 401.
    tasks_only = smart.system_token("system/Task.rs")
    assert _events(smart, sid, tasks_only).status_code == 403
    assert smart.http.get("/fhir/Subscription/$status",
                          headers=bearer(tasks_only)).status_code == 403
    r = smart.http.get("/fhir/Subscription/$status", headers=bearer(scoped))
    assert r.status_code == 200 and r.json()["total"] == 2
    assert smart.http.get(f"/fhir/Subscription/{sid}/$events").status_code == 401
    r = smart.http.post(f"/fhir/Subscription/{sid}/$get-ws-binding-token",
                        headers=bearer(tasks_only))
    assert r.status_code == 403
