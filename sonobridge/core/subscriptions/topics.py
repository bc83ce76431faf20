"""The subscription topics this server offers, and what each one filters on.

R4 has no SubscriptionTopic resource: the Subscriptions R5 Backport IG names a topic by its
canonical URL in ``Subscription.criteria`` and lets a server advertise the canonicals in its
CapabilityStatement. Each topic here says which resource type triggers it, when (a pure test
of the change), and the filters a subscriber may narrow it with (``filter-criteria``
``Type?name=value``): each filter name reads one or more reference elements of the focus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

TOPIC_BASE = "http://sonobridge.org/fhir/SubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
CS_TOPIC_EXTENSION = (f"{BACKPORT}/StructureDefinition/"
                      "capabilitystatement-subscriptiontopic-canonical")

# (action C/U/D, the resource as written or None for a deletion, the status it had before
# the write or None) -> whether it triggers
Trigger = Callable[[str, "dict[str, Any] | None", "str | None"], bool]


@dataclass(frozen=True)
class Topic:
    code: str
    resource_type: str
    description: str
    trigger: Trigger
    # filter name -> the element paths (dotted, references) whose values it matches
    filters: dict[str, tuple[str, ...]]

    @property
    def canonical(self) -> str:
        return f"{TOPIC_BASE}/{self.code}"


def _written(action: str, resource: dict[str, Any] | None, before: str | None = None) -> bool:
    return action in ("C", "U") and resource is not None


def _status_in(*statuses: str) -> Trigger:
    return lambda action, resource, before: _written(action, resource) and \
        resource is not None and resource.get("status") in statuses


def _became(status: str) -> Trigger:
    """Only the write that makes the status ``status`` (a study is rewritten for every
    instance that arrives: its subscribers hear once that it is available)."""
    return lambda action, resource, before: _written(action, resource) and \
        resource is not None and resource.get("status") == status and before != status


COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"


def _critical(action: str, resource: dict[str, Any] | None, before: str | None) -> bool:
    """A critical-value notification: the reports domain's SonoCriticalValueCommunication
    (category ``alert``, the profile when it has a recipient and a subject), or any
    Communication whose category is ``alert`` or a code saying critical."""
    if not _written(action, resource) or resource is None:
        return False
    profiles = (resource.get("meta") or {}).get("profile") or []
    if any(str(p).rstrip("/").endswith("SonoCriticalValueCommunication") for p in profiles):
        return True
    for category in resource.get("category") or []:
        for coding in (category or {}).get("coding") or []:
            code = str((coding or {}).get("code", "")).lower()
            if "critical" in code or (code == "alert" and (coding or {}).get("system")
                                      == COMMUNICATION_CATEGORY):
                return True
    return False


TOPICS: dict[str, Topic] = {t.canonical: t for t in (
    Topic("consultation-task-changed", "Task",
          "A consultation Task was created or changed (status, businessStatus, owner, output).",
          _written,
          {"patient": ("for",), "owner": ("owner",), "requester": ("requester",),
           "organization": ("owner", "requester", "restriction.recipient")}),
    Topic("imaging-study-available", "ImagingStudy",
          "An ImagingStudy became available (created available, or its status changed to "
          "available); not again for each instance that arrives after.",
          _became("available"),
          {"patient": ("subject",), "referrer": ("referrer",),
           "organization": ("location", "interpreter")}),
    Topic("report-final", "DiagnosticReport",
          "A DiagnosticReport became final, or was amended or corrected.",
          _status_in("final", "amended", "corrected", "appended"),
          {"patient": ("subject",), "performer": ("performer", "resultsInterpreter"),
           "organization": ("performer", "resultsInterpreter")}),
    Topic("critical-value", "Communication",
          "A critical-value notification (Communication) was sent or acknowledged.",
          _critical,
          {"patient": ("subject",), "recipient": ("recipient",),
           "organization": ("recipient", "sender")}),
)}

TRIGGER_TYPES = frozenset(t.resource_type for t in TOPICS.values())
# Types whose topic needs the status the resource had before the write.
TRANSITION_TYPES = frozenset({"ImagingStudy"})


def topics_for(resource_type: str) -> list[Topic]:
    return [t for t in TOPICS.values() if t.resource_type == resource_type]


def _values(node: Any, path: list[str]) -> Iterator[Any]:
    if not path:
        yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def references(resource: dict[str, Any], paths: tuple[str, ...], base: str) -> set[str]:
    """The references (``Type/id``, relative) found at ``paths`` in the resource."""
    out: set[str] = set()
    for path in paths:
        for value in _values(resource, path.split(".")):
            for ref in (value if isinstance(value, list) else [value]):
                text = ref.get("reference") if isinstance(ref, dict) else None
                if isinstance(text, str) and text:
                    if base and text.startswith(base + "/"):
                        text = text[len(base) + 1:]
                    out.add(text.split("/_history/")[0])
    return out


def matches(topic: Topic, filters: list[tuple[str, list[str]]], resource: dict[str, Any],
            base: str) -> bool:
    """All filters hold (each one: any of its values, comma-separated ORs, is referenced).
    A value without a type (``123``) matches that id of any type."""
    for name, wanted in filters:
        found = references(resource, topic.filters[name], base)
        ids = {ref.rsplit("/", 1)[-1] for ref in found}
        if not any(w in found or ("/" not in w and w in ids) for w in wanted):
            return False
    return True


def capability_extensions() -> list[dict[str, Any]]:
    """The Backport IG's way of advertising the topics: one extension per canonical, on the
    CapabilityStatement's ``rest.resource`` entry of Subscription."""
    return [{"url": CS_TOPIC_EXTENSION, "valueCanonical": canonical} for canonical in TOPICS]


def advertise(capability: dict[str, Any]) -> dict[str, Any]:
    """Add the topic canonicals to a CapabilityStatement's Subscription entry (in place)."""
    for rest in capability.get("rest", []):
        for entry in rest.get("resource", []):
            if entry.get("type") == "Subscription":
                kept = [e for e in entry.get("extension", [])
                        if e.get("url") != CS_TOPIC_EXTENSION]
                entry["extension"] = kept + capability_extensions()
    return capability
