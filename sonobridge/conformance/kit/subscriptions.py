"""The subscriptions suite (FHIR Subscriptions R5 Backport IG for R4, topic-based).

Against a FHIR base (``--target``): the CapabilityStatement advertises the topics (the
Backport's ``capabilitystatement-subscriptiontopic-canonical`` extension) and the
operations; a Subscription to an unknown topic, to a non-http(s) endpoint, or to a loopback
address is refused with 422 naming the element; a websocket subscription walks
``$get-ws-binding-token`` -> ``bind-with-token`` -> handshake -> an event notification (a
tagged Task the kit writes) -> ``$status`` and ``$events``. Everything written is deleted.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, TAG_SYSTEM, base
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import Check, Context, Group, Requirement, Suite
from sonobridge.conformance.kit.model import TestDef as T

IG = "https://hl7.org/fhir/uv/subscriptions-backport"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
TOPIC_EXT = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
CONTENT_EXT = f"{BACKPORT}/StructureDefinition/backport-payload-content"
TOPIC_BASE = "http://sonobridge.org/fhir/SubscriptionTopic"
TOPICS = ("consultation-task-changed", "imaging-study-available", "report-final",
          "critical-value")
TASK_TOPIC = f"{TOPIC_BASE}/consultation-task-changed"


def _subscription(endpoint: str | None, *, topic: str = TASK_TOPIC,
                  channel: str = "rest-hook") -> dict[str, Any]:
    sub: dict[str, Any] = {
        "resourceType": "Subscription", "status": "requested", "reason": "conformance kit",
        "criteria": topic, "channel": {"type": channel, "payload": FHIR_JSON, "_payload": {
            "extension": [{"url": CONTENT_EXT, "valueCode": "id-only"}]}}}
    if endpoint is not None:
        sub["channel"]["endpoint"] = endpoint
    return sub


def _subscription_entry(check: Check) -> dict[str, Any]:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200, what="the CapabilityStatement")
    for rest in json_body(response, "the CapabilityStatement").get("rest", []):
        for entry in rest.get("resource", []):
            if entry.get("type") == "Subscription":
                return dict(entry)
    check.fail("the CapabilityStatement has no Subscription resource entry")
    return {}


def topics_advertised(check: Check) -> None:
    entry = _subscription_entry(check)
    found = {e.get("valueCanonical") for e in entry.get("extension", [])
             if e.get("url") == TOPIC_EXT}
    wanted = {f"{TOPIC_BASE}/{t}" for t in TOPICS}
    check.expect(wanted <= found, f"topic canonicals {sorted(wanted - found)} are not "
                 f"advertised with {TOPIC_EXT}")


def operations_advertised(check: Check) -> None:
    names = {op.get("name") for op in _subscription_entry(check).get("operation", [])}
    missing = {"status", "events", "get-ws-binding-token"} - names
    check.expect(not missing, f"Subscription operations not listed: {sorted(missing)}")


def _refused(check: Check, sub: dict[str, Any], path: str, what: str) -> None:
    response = check.http.post(f"{base(check.ctx)}/Subscription", content=json.dumps(sub),
                               headers=HEADERS)
    if response.status_code == 201:
        _remember(check.ctx, f"Subscription/{json_body(response).get('id')}")
    expect_status(response, 422, what=what)
    issues = json_body(response, "the OperationOutcome").get("issue", [])
    where = [x for issue in issues for x in issue.get("expression", [])]
    check.expect(path in where, f"the OperationOutcome names {path}; got {where}")


def unknown_topic(check: Check) -> None:
    _refused(check, _subscription("https://receiver.example/hook",
                                  topic="http://example.org/SubscriptionTopic/none"),
             "Subscription.criteria", "a Subscription to an unknown topic")


def bad_endpoint(check: Check) -> None:
    _refused(check, _subscription("ftp://receiver.example/hook"),
             "Subscription.channel.endpoint", "a rest-hook to an ftp endpoint")


def private_endpoint(check: Check) -> None:
    _refused(check, _subscription("http://127.0.0.1:9/hook"),
             "Subscription.channel.endpoint",
             "a rest-hook to a loopback address (private addresses are refused by default)")


def _remember(ctx: Context, ref: str) -> None:
    ctx.state.setdefault("subs_created", []).append(ref)


def websocket_walk(check: Check) -> None:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    root = base(check.ctx)
    response = check.http.post(f"{root}/Subscription", headers=HEADERS, content=json.dumps(
        _subscription(None, channel="websocket")))
    expect_status(response, 201, what="a websocket Subscription")
    sid = str(json_body(response).get("id"))
    _remember(check.ctx, f"Subscription/{sid}")
    response = check.http.post(f"{root}/Subscription/{sid}/$get-ws-binding-token",
                               headers={"Accept": FHIR_JSON})
    expect_status(response, 200, what="$get-ws-binding-token")
    params = {p.get("name"): p for p in json_body(response).get("parameter", [])}
    token = params.get("token", {}).get("valueString")
    url = params.get("websocket-url", {}).get("valueUrl")
    check.expect(token and url, "the answer carries token and websocket-url")
    headers = {}
    if check.options.token:
        headers["Authorization"] = f"Bearer {check.options.token}"
    try:
        with connect(str(url), open_timeout=check.options.timeout,
                     additional_headers=headers) as ws:
            ws.send(f"bind-with-token: {token}")
            handshake = json.loads(ws.recv(timeout=check.options.timeout))
            check.note(f"handshake: {json.dumps(handshake)[:500]}")
            check.expect(_kind(handshake) == "handshake", "the first message is a handshake")
            tag = "subs-" + uuid.uuid4().hex[:12]
            response = check.http.post(f"{root}/Task", headers=HEADERS, content=json.dumps({
                "resourceType": "Task", "status": "requested", "intent": "order",
                "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]}}))
            expect_status(response, 201, what="the kit's Task")
            task = str(json_body(response).get("id"))
            _remember(check.ctx, f"Task/{task}")
            notification = json.loads(ws.recv(timeout=check.options.timeout))
            check.note(f"notification: {json.dumps(notification)[:800]}")
    except (OSError, TimeoutError, WebSocketException) as exc:
        check.fail(f"websocket {url}: {type(exc).__name__}: {exc}")
    check.expect(notification.get("type") == "history", "the notification is a history "
                 "Bundle")
    check.expect(_kind(notification) == "event-notification", "an event-notification")
    focus = [e.get("fullUrl", "") for e in notification.get("entry", [])[1:]]
    check.expect(any(f.endswith(f"/Task/{task}") for f in focus),
                 f"the notification names Task/{task}; got {focus}")
    response = check.http.get(f"{root}/Subscription/{sid}/$status",
                              headers={"Accept": FHIR_JSON})
    expect_status(response, 200, what="$status")
    response = check.http.get(f"{root}/Subscription/{sid}/$events",
                              params={"eventsSinceNumber": "1"},
                              headers={"Accept": FHIR_JSON})
    expect_status(response, 200, what="$events")
    check.expect(_kind(json_body(response)) == "query-event", "$events answers query-event")


def _kind(bundle: dict[str, Any]) -> str | None:
    entries = bundle.get("entry") or [{}]
    status = entries[0].get("resource") or {}
    for p in status.get("parameter", []):
        if p.get("name") == "type":
            return str(p.get("valueCode"))
    return None


def cleanup(ctx: Context) -> None:
    for ref in reversed(ctx.state.get("subs_created", [])):
        with contextlib.suppress(httpx.HTTPError):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("subs-cap-01", "Topics advertised", "The four SonoBridge topics as "
       "capabilitystatement-subscriptiontopic-canonical extensions on the Subscription entry.",
       f"{IG}/StructureDefinition-capabilitystatement-subscriptiontopic-canonical.html",
       topics_advertised),
    _t("subs-cap-02", "Operations advertised", "$status, $events and $get-ws-binding-token "
       "on Subscription.", f"{IG}/operations.html", operations_advertised),
    _t("subs-bad-01", "Unknown topic refused", "A Subscription whose criteria is not a topic "
       "the server offers: 422 naming Subscription.criteria.", f"{IG}/components.html",
       unknown_topic),
    _t("subs-bad-02", "Non-http(s) endpoint refused", "A rest-hook endpoint must be http or "
       "https: 422 naming Subscription.channel.endpoint.", f"{IG}/channels.html",
       bad_endpoint),
    _t("subs-bad-03", "Loopback endpoint refused", "A rest-hook to a private or loopback "
       "address (server-side request forgery): 422.", f"{IG}/safety_security.html",
       private_endpoint),
    _t("subs-ws-01", "Websocket: bind, handshake, notification, $status, $events",
       "$get-ws-binding-token, bind-with-token, a handshake, then a history Bundle naming the "
       "Task the kit wrote; $status and $events answer.", f"{IG}/channels.html#websockets",
       websocket_walk),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("subscriptions", "Topic-based subscriptions (R4 Backport)", TESTS,
                  teardown=cleanup)]


SUITE = Suite("subscriptions", "Subscriptions (R5 Backport for R4)", groups)
