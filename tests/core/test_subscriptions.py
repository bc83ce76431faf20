"""Topic-based subscriptions in the core: what a Subscription may say (422 with the element
otherwise), which changes trigger which subscriptions (topics, filters), event numbers in
order, ``$status``, ``$events``, ``$get-ws-binding-token``, and the owner's read rights
bounding what a notification tells."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from sonobridge.app.compose import open_app_core
from sonobridge.app.server import create_app
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.subscriptions import attach, service_of
from sonobridge.core.subscriptions.model import (
    FILTER_CRITERIA,
    HEARTBEAT_PERIOD,
    PAYLOAD_CONTENT,
)
from sonobridge.core.subscriptions.service import Subscriptions, policy_json
from sonobridge.core.subscriptions.topics import CS_TOPIC_EXTENSION, TOPICS, capability_extensions
from tests.fhir.helpers import body, expressions, post, put

TASK_TOPIC = "http://sonobridge.org/fhir/SubscriptionTopic/consultation-task-changed"
REPORT_TOPIC = "http://sonobridge.org/fhir/SubscriptionTopic/report-final"


def subscription(topic: str = TASK_TOPIC, *, endpoint: str = "http://93.184.216.34/hook",
                 channel: str = "rest-hook", content: str = "id-only",
                 filters: list[str] | None = None, status: str = "requested",
                 heartbeat: int | None = None) -> dict[str, Any]:
    sub: dict[str, Any] = {
        "resourceType": "Subscription", "status": status, "reason": "test",
        "criteria": topic,
        "channel": {"type": channel, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": PAYLOAD_CONTENT,
                                                "valueCode": content}]}},
    }
    if channel == "rest-hook":
        sub["channel"]["endpoint"] = endpoint
    if filters:
        sub["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f}
                                          for f in filters]}
    if heartbeat is not None:
        sub["channel"]["extension"] = [{"url": HEARTBEAT_PERIOD,
                                        "valueUnsignedInt": heartbeat}]
    return sub


@pytest.fixture
def subs_client(settings) -> Iterator[tuple[TestClient, Subscriptions]]:
    settings = dataclasses.replace(settings, load_sample=False)
    core = open_app_core(settings, run_migrations=False)
    if service_of(core) is None:
        attach(core)
    service = service_of(core)
    assert service is not None
    with TestClient(create_app(settings, core), base_url="http://sono.test",
                    client=("127.0.0.1", 50000)) as client:
        yield client, service
    core.close()


def _task(client, tid: str, *, patient: str = "p1", owner: str = "Practitioner/e1",
          status: str = "requested") -> Any:
    return put(client, f"/fhir/Task/{tid}", {
        "resourceType": "Task", "id": tid, "status": status, "intent": "order",
        "for": {"reference": f"Patient/{patient}"}, "owner": {"reference": owner}})


# ------------------------------------------------------------------ validation (bad input)

@pytest.mark.parametrize("change, path", [
    (lambda s: s.update(criteria="http://example.org/SubscriptionTopic/nope"),
     "Subscription.criteria"),
    (lambda s: s.update(criteria="Task?status=requested"), "Subscription.criteria"),
    (lambda s: s["channel"].update(endpoint="ftp://93.184.216.34/x"),
     "Subscription.channel.endpoint"),
    (lambda s: s["channel"].update(endpoint="mailto:a@b.c"), "Subscription.channel.endpoint"),
    (lambda s: s["channel"].pop("endpoint"), "Subscription.channel.endpoint"),
    (lambda s: s["channel"].update(endpoint="http://user:pw@93.184.216.34/x"),
     "Subscription.channel.endpoint"),
    (lambda s: s["channel"].update(type="email"), "Subscription.channel.type"),
    (lambda s: s["channel"].update(payload="application/fhir+xml"),
     "Subscription.channel.payload"),
    (lambda s: s["channel"]["_payload"]["extension"][0].update(valueCode="everything"),
     "Subscription.channel._payload.extension.valueCode"),
    (lambda s: s.update(_criteria={"extension": [
        {"url": FILTER_CRITERIA, "valueString": "Task?colour=blue"}]}),
     "Subscription._criteria.extension[0].valueString"),
    (lambda s: s.update(_criteria={"extension": [
        {"url": FILTER_CRITERIA, "valueString": "Patient?patient=Patient/1"}]}),
     "Subscription._criteria.extension[0].valueString"),
    (lambda s: s.update(_criteria={"extension": [
        {"url": FILTER_CRITERIA, "valueString": "Task?patient="}]}),
     "Subscription._criteria.extension[0].valueString"),
    (lambda s: s["channel"].update(extension=[{"url": HEARTBEAT_PERIOD,
                                               "valueUnsignedInt": 10**7}]),
     f"Subscription.channel.extension('{HEARTBEAT_PERIOD}')"),
    (lambda s: s["channel"].update(header=["no colon here"]), "Subscription.channel.header"),
    (lambda s: s.update(status="active"), "Subscription.status"),
    (lambda s: s.update(status="error"), "Subscription.status"),
])
def test_bad_subscriptions_are_refused_with_the_element(subs_client, change, path):
    client, _ = subs_client
    sub = subscription()
    change(sub)
    r = post(client, "/fhir/Subscription", sub)
    assert r.status_code == 422, r.text
    assert path in expressions(r)


@pytest.mark.parametrize("endpoint", [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "https://10.1.2.3/hook",
    "http://192.168.1.20/hook", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook",
    "http://name-that-does-not-resolve.invalid/hook",
])
def test_private_endpoints_are_refused_by_default(subs_client, endpoint):
    client, service = subs_client
    assert service.allow_private is False
    r = post(client, "/fhir/Subscription", subscription(endpoint=endpoint))
    assert r.status_code == 422, r.text
    assert expressions(r) == ["Subscription.channel.endpoint"]
    assert "SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE" in r.text or "resolve" in r.text


def test_private_endpoints_are_accepted_when_allowed(subs_client):
    client, service = subs_client
    service.allow_private = True
    r = post(client, "/fhir/Subscription", subscription(endpoint="http://127.0.0.1:9/h"))
    assert r.status_code == 201, r.text


def test_a_public_endpoint_is_accepted_requested_and_queued_for_its_handshake(subs_client):
    client, service = subs_client
    r = post(client, "/fhir/Subscription", subscription())
    assert r.status_code == 201, r.text
    sid = body(r)["id"]
    row = service.queue.channel(sid)
    assert (row.phase, row.status, row.events) == ("handshake", "queued", 0)
    # A client may switch it off; it may not make it active itself.
    sub = body(client.get(f"/fhir/Subscription/{sid}"))
    sub["status"] = "active"
    r = put(client, f"/fhir/Subscription/{sid}", sub)
    assert r.status_code == 422 and expressions(r) == ["Subscription.status"]
    sub["status"] = "off"
    assert put(client, f"/fhir/Subscription/{sid}", sub).status_code == 200
    assert service.queue.channel(sid).status == "off"
    assert client.delete(f"/fhir/Subscription/{sid}").status_code in (200, 204)


# ------------------------------------------------------------------ triggers and filters

def test_events_are_numbered_per_subscription_and_filtered(subs_client):
    client, service = subs_client
    everything = body(post(client, "/fhir/Subscription", subscription()))["id"]
    p1 = body(post(client, "/fhir/Subscription", subscription(
        filters=["Task?patient=Patient/p1"])))["id"]
    owner_e2 = body(post(client, "/fhir/Subscription", subscription(
        filters=["Task?owner=e2,Practitioner/e3"])))["id"]
    both = body(post(client, "/fhir/Subscription", subscription(
        filters=["Task?patient=Patient/p1", "Task?owner=Practitioner/e2"])))["id"]
    org = body(post(client, "/fhir/Subscription", subscription(
        filters=["Task?organization=Organization/o1"])))["id"]
    reports = body(post(client, "/fhir/Subscription", subscription(REPORT_TOPIC)))["id"]

    assert _task(client, "t1", patient="p1", owner="Practitioner/e1").status_code == 201
    assert _task(client, "t2", patient="p2", owner="Practitioner/e2").status_code == 201
    assert _task(client, "t3", patient="p1", owner="Practitioner/e2").status_code == 201
    assert _task(client, "t4", patient="p3", owner="Organization/o1").status_code == 201
    # The same content again is no change: no event.
    assert _task(client, "t1", patient="p1", owner="Practitioner/e1").status_code == 200
    # A change is.
    assert _task(client, "t1", patient="p1", owner="Practitioner/e1",
                 status="accepted").status_code == 200
    counts = service.queue.counts([everything, p1, owner_e2, both, org, reports])
    assert counts == {everything: 5, p1: 3, owner_e2: 2, both: 1, org: 1, reports: 0}
    numbers = [(e.number, e.focus.split("/_history/")[0])
               for e in service.queue.events(p1, 1, 100, 100)]
    assert numbers == [(1, "Task/t1"), (2, "Task/t3"), (3, "Task/t1")]
    assert [e.focus for e in service.queue.events(p1, 3, 3, 10)] == ["Task/t1/_history/2"]

    # report-final: only when the report is final (or amended/corrected).
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "preliminary",
              "code": {"text": "US"}, "subject": {"reference": "Patient/p1"}}
    assert put(client, "/fhir/DiagnosticReport/r1", report).status_code == 201
    assert service.queue.counts([reports])[reports] == 0
    report["status"] = "final"
    assert put(client, "/fhir/DiagnosticReport/r1", report).status_code == 200
    assert service.queue.counts([reports])[reports] == 1


def test_a_switched_off_subscription_gets_no_events(subs_client):
    client, service = subs_client
    sid = body(post(client, "/fhir/Subscription", subscription(status="off")))["id"]
    _task(client, "t1")
    assert service.queue.counts([sid])[sid] == 0


def test_an_event_rolls_back_with_its_change(subs_client):
    client, service = subs_client
    sid = body(post(client, "/fhir/Subscription", subscription()))["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order"},
         "request": {"method": "POST", "url": "Task"}},
        {"resource": {"resourceType": "Patient", "gender": "not-a-gender"},
         "request": {"method": "POST", "url": "Patient"}}]}
    r = post(client, "/fhir", bundle)
    assert r.status_code >= 400
    assert service.queue.counts([sid])[sid] == 0
    assert service.queue.events(sid, 1, 10, 10) == []


# ------------------------------------------------------------------ operations

def test_status_and_events(subs_client):
    client, _ = subs_client
    sid = body(post(client, "/fhir/Subscription", subscription(content="full-resource")))["id"]
    for i in range(3):
        _task(client, f"t{i}")
    r = client.get(f"/fhir/Subscription/{sid}/$status")
    assert r.status_code == 200, r.text
    status = body(r)
    assert status["type"] == "searchset"
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "requested"
    assert params["type"]["valueCode"] == "query-status"
    assert params["events-since-subscription-start"]["valueString"] == "3"
    assert params["topic"]["valueCanonical"] == TASK_TOPIC
    r = client.get(f"/fhir/Subscription/$status?id={sid}")
    assert r.status_code == 200 and body(r)["total"] == 1

    r = client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=2")
    assert r.status_code == 200, r.text
    bundle = body(r)
    assert bundle["type"] == "history"
    first = bundle["entry"][0]["resource"]
    assert first["resourceType"] == "Parameters"
    assert first["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
        "backport-subscription-status-r4"]
    events = [p for p in first["parameter"] if p["name"] == "notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["2", "3"]
    assert [e["part"][2]["valueReference"]["reference"] for e in events] == [
        "http://sono.test/fhir/Task/t1", "http://sono.test/fhir/Task/t2"]
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == ["t1", "t2"]
    r = client.get(f"/fhir/Subscription/{sid}/$events?eventsSinceNumber=1"
                   "&eventsUntilNumber=1&content=id-only")
    entries = body(r)["entry"]
    assert len(entries) == 2 and "resource" not in entries[1]
    assert entries[1]["fullUrl"] == "http://sono.test/fhir/Task/t0"
    r = client.get(f"/fhir/Subscription/{sid}/$events?content=empty")
    assert len(body(r)["entry"]) == 1

    # Bad input: not a number, a reversed range, an unknown content, an unknown subscription.
    for query, code in (("eventsSinceNumber=x", 400), ("eventsSinceNumber=-1", 400),
                        ("eventsSinceNumber=3&eventsUntilNumber=2", 400),
                        ("content=everything", 400)):
        r = client.get(f"/fhir/Subscription/{sid}/$events?{query}")
        assert r.status_code == code, (query, r.text)
        assert body(r)["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Subscription/nope/$events").status_code == 404
    # Without ids: every Subscription the caller may read.
    r = client.get("/fhir/Subscription/$status")
    assert r.status_code == 200 and body(r)["total"] == 1
    assert client.post("/fhir/Subscription/$get-ws-binding-token").status_code == 400


def test_ws_binding_token(subs_client):
    client, service = subs_client
    rest = body(post(client, "/fhir/Subscription", subscription()))["id"]
    ws = body(post(client, "/fhir/Subscription", subscription(channel="websocket")))["id"]
    assert client.get(f"/fhir/Subscription/{ws}/$get-ws-binding-token").status_code == 405
    r = client.post(f"/fhir/Subscription/{ws}/$get-ws-binding-token")
    assert r.status_code == 200, r.text
    params = {p["name"]: p for p in body(r)["parameter"]}
    assert params["subscription"]["valueString"] == ws
    assert params["websocket-url"]["valueUrl"] == "ws://sono.test/fhir/subscription-ws"
    assert service.bind(params["token"]["valueString"]) == [ws]
    assert service.bind("forged") == []
    r = client.post(f"/fhir/Subscription/{rest}/$get-ws-binding-token")
    assert r.status_code == 422 and expressions(r) == ["Subscription.channel.type"]


def test_topics_are_offered_as_backport_canonicals():
    assert sorted(t.code for t in TOPICS.values()) == [
        "consultation-task-changed", "critical-value", "imaging-study-available",
        "report-final"]
    assert all(c.startswith("http://sonobridge.org/fhir/SubscriptionTopic/") for c in TOPICS)
    assert {e["url"] for e in capability_extensions()} == {CS_TOPIC_EXTENSION}
    assert {e["valueCanonical"] for e in capability_extensions()} == set(TOPICS)


# ------------------------------------------------------------------ the owner's rights

def test_notifications_tell_only_what_the_owner_may_read(subs_client):
    client, service = subs_client
    _task(client, "mine", patient="p1")
    _task(client, "theirs", patient="p2")
    for pid in ("p1", "p2"):
        put(client, f"/fhir/Patient/{pid}", {"resourceType": "Patient", "id": pid})
    events = service.queue
    sid = body(post(client, "/fhir/Subscription", subscription(content="full-resource")))["id"]
    _task(client, "mine", patient="p1", status="accepted")
    _task(client, "theirs", patient="p2", status="accepted")
    listed = events.events(sid, 1, 10, 10)
    patient_policy = Policy(subject="u1", client_id="app", patient="p1",
                            scopes=tuple(resource_scopes("patient/*.rs")),
                            raw_scope="patient/*.rs")
    config = service.config_of(events.channel(sid).config)
    bundle = service.notification(sid, config, "event-notification", 2, listed,
                                  policy_json(patient_policy))
    entries = bundle["entry"]
    parts = [p for p in entries[0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [len(p["part"]) for p in parts] == [3, 2]  # the second without its focus
    assert len(entries) == 2 and entries[1]["resource"]["id"] == "mine"
    # The same through the owner's policy object round trip.
    assert service.owner_caller(policy_json(patient_policy)).policy.patient == "p1"
    assert isinstance(service.owner_caller(policy_json(Policy.open())), Caller)


def test_capability_statement_advertises_topics_and_operations(subs_client):
    client, _ = subs_client
    cs = body(client.get("/fhir/metadata"))
    entry = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Subscription")
    assert sorted(e["valueCanonical"] for e in entry["extension"]
                  if e["url"] == CS_TOPIC_EXTENSION) == sorted(TOPICS)
    ops = {op["name"]: op["definition"] for op in entry["operation"]}
    assert ops["events"].endswith("/OperationDefinition/backport-subscription-events")
    assert ops["status"].endswith("/OperationDefinition/backport-subscription-status")
    assert ops["get-ws-binding-token"].endswith(
        "/OperationDefinition/backport-subscription-get-ws-binding-token")


def test_no_events_after_the_subscription_end(subs_client):
    client, service = subs_client
    ended = subscription()
    ended["end"] = "2020-01-01T00:00:00Z"
    running = subscription()
    running["end"] = "2999-01-01T00:00:00+08:00"
    ended_id = body(post(client, "/fhir/Subscription", ended))["id"]
    running_id = body(post(client, "/fhir/Subscription", running))["id"]
    _task(client, "t1")
    assert service.queue.counts([ended_id, running_id]) == {ended_id: 0, running_id: 1}


def test_a_study_is_told_available_once(subs_client):
    client, service = subs_client
    topic = "http://sonobridge.org/fhir/SubscriptionTopic/imaging-study-available"
    sid = body(post(client, "/fhir/Subscription", subscription(
        topic, filters=["ImagingStudy?patient=Patient/p1"])))["id"]
    study = {"resourceType": "ImagingStudy", "id": "s1", "status": "available",
             "subject": {"reference": "Patient/p1"}, "numberOfSeries": 1}
    assert put(client, "/fhir/ImagingStudy/s1", study).status_code == 201
    study["numberOfSeries"] = 2  # another series arrived: no new event
    assert put(client, "/fhir/ImagingStudy/s1", study).status_code == 200
    assert service.queue.counts([sid]) == {sid: 1}
    registered = {"resourceType": "ImagingStudy", "id": "s2", "status": "registered",
                  "subject": {"reference": "Patient/p1"}}
    assert put(client, "/fhir/ImagingStudy/s2", registered).status_code == 201
    assert service.queue.counts([sid]) == {sid: 1}
    registered["status"] = "available"  # registered -> available: told
    assert put(client, "/fhir/ImagingStudy/s2", registered).status_code == 200
    other = {"resourceType": "ImagingStudy", "id": "s3", "status": "available",
             "subject": {"reference": "Patient/p2"}}  # filtered out
    assert put(client, "/fhir/ImagingStudy/s3", other).status_code == 201
    assert [e.focus for e in service.queue.events(sid, 1, 10, 10)] == [
        "ImagingStudy/s1/_history/1", "ImagingStudy/s2/_history/2"]


def test_stored_images_tell_their_study_available_once(subs_client):
    """Through the one DICOM write path: a study stored in two STOW-RS requests (the
    ImagingStudy is rewritten for each) is told once."""
    from pydicom.uid import generate_uid

    from tests.dicom_data import cine
    from tests.dicomweb.helpers import stow

    client, service = subs_client
    topic = "http://sonobridge.org/fhir/SubscriptionTopic/imaging-study-available"
    sid = body(post(client, "/fhir/Subscription", subscription(topic)))["id"]
    study = generate_uid()
    assert stow(client, [cine(study=study)]).status_code == 200
    assert stow(client, [cine(study=study, seed=2)]).status_code == 200
    events = service.queue.events(sid, 1, 10, 10)
    assert [e.focus.split("/_history/")[0] for e in events] == [f"ImagingStudy/{study}"]


def test_critical_value_communications(subs_client):
    client, service = subs_client
    topic = "http://sonobridge.org/fhir/SubscriptionTopic/critical-value"
    sid = body(post(client, "/fhir/Subscription", subscription(
        topic, filters=["Communication?recipient=Practitioner/dr1"])))["id"]
    alert = {"resourceType": "Communication", "id": "c1", "status": "in-progress",
             "category": [{"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                 "code": "alert"}]}],
             "subject": {"reference": "Patient/p1"},
             "recipient": [{"reference": "Practitioner/dr1"}]}
    assert put(client, "/fhir/Communication/c1", alert).status_code == 201
    alert["status"] = "completed"  # acknowledged: told too
    assert put(client, "/fhir/Communication/c1", alert).status_code == 200
    chat = {"resourceType": "Communication", "id": "c2", "status": "completed",
            "recipient": [{"reference": "Practitioner/dr1"}]}  # an ordinary message
    assert put(client, "/fhir/Communication/c2", chat).status_code == 201
    other = dict(alert, id="c3", recipient=[{"reference": "Practitioner/dr2"}])
    assert put(client, "/fhir/Communication/c3", other).status_code == 201
    assert [e.focus for e in service.queue.events(sid, 1, 10, 10)] == [
        "Communication/c1/_history/1", "Communication/c1/_history/2"]
