"""Notification bundles as the Backport IG writes them for R4: a ``history`` Bundle whose first
entry is a ``Parameters`` resource (profile ``backport-subscription-status-r4``) saying which
subscription, topic, status, the kind of notification and the events it carries; then one
entry per event's focus (``id-only``: the URL; ``full-resource``: the resource too).

Pure functions: the caller gives the time and the resources.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sonobridge.core.subscriptions.topics import BACKPORT

STATUS_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"


@dataclass(frozen=True, slots=True)
class Notified:
    """One event in a notification: its number, when, its focus (``Type/id``) and, for
    ``full-resource``, the resource (None when the owner may not read it)."""

    number: int
    timestamp: str
    focus: str | None
    resource: dict[str, Any] | None = None


def status_parameters(base: str, subscription_id: str, topic: str, status: str, kind: str,
                      since_start: int, events: list[Notified], content: str,
                      error: str | None = None) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {
            "reference": f"{base}/Subscription/{subscription_id}"}},
        {"name": "topic", "valueCanonical": topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.timestamp},
        ]
        if content != "empty" and event.focus is not None:
            parts.append({"name": "focus", "valueReference": {
                "reference": f"{base}/{event.focus}"}})
        parameters.append({"name": "notification-event", "part": parts})
    if error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def bundle(base: str, subscription_id: str, topic: str, status: str, kind: str,
           since_start: int, events: list[Notified], content: str, timestamp: str,
           error: str | None = None, bundle_type: str = "history") -> dict[str, Any]:
    params = status_parameters(base, subscription_id, topic, status, kind, since_start, events,
                               content, error)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{params['id']}", "resource": params,
        "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
        "response": {"status": "200"}}]
    if content != "empty":
        for event in events:  # one entry per event: a history bundle keeps each version
            if event.focus is None:
                continue
            entry: dict[str, Any] = {
                "fullUrl": f"{base}/{event.focus}",
                "request": {"method": "PUT", "url": event.focus},
                "response": {"status": "200"}}
            if content == "full-resource" and event.resource is not None:
                entry["resource"] = event.resource
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": bundle_type,
            "timestamp": timestamp, "entry": entries}
