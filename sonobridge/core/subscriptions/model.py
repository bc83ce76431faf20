"""A Subscription resource (R4 + the Backport IG's extensions) read into what delivery needs,
and refused with a 422 naming the element when it cannot be served.

Backport elements read: ``criteria`` (the topic canonical), ``_criteria`` extensions
``backport-filter-criteria`` (``Type?name=value[,value]&...``), ``channel.type`` (rest-hook,
websocket), ``channel.endpoint``, ``channel.header``, ``channel.payload`` (the MIME type) with
``_payload`` extension ``backport-payload-content`` (empty, id-only, full-resource), and the
channel extensions ``backport-heartbeat-period``, ``backport-timeout``, ``backport-max-count``.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sonobridge.core.errors import CoreError
from sonobridge.core.subscriptions.topics import BACKPORT, TOPICS, Topic

SD = f"{BACKPORT}/StructureDefinition"
FILTER_CRITERIA = f"{SD}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{SD}/backport-payload-content"
HEARTBEAT_PERIOD = f"{SD}/backport-heartbeat-period"
TIMEOUT = f"{SD}/backport-timeout"
MAX_COUNT = f"{SD}/backport-max-count"
PROFILE = f"{SD}/backport-subscription"

CHANNELS = ("rest-hook", "websocket")
CONTENTS = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
MAX_HEARTBEAT = 86_400  # seconds
MAX_TIMEOUT = 60  # seconds an endpoint may take to answer one notification
MAX_HEADERS = 10


@dataclass
class Config:
    """What the sender and the websocket channel need, kept beside the queue row (JSON)."""

    topic: str
    channel: str
    status: str
    endpoint: str = ""
    headers: list[str] = field(default_factory=list)
    content: str = "id-only"
    content_type: str = "application/fhir+json"
    filters: list[tuple[str, list[str]]] = field(default_factory=list)
    heartbeat: int = 0
    timeout: int = 10
    max_count: int = 100
    base: str = ""  # the FHIR base the subscriber used (absolute URLs in notifications)
    end: int = 0  # Subscription.end in µs since the epoch (0: none): no events after it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        data = dict(data)
        data["filters"] = [(name, list(values)) for name, values in data.get("filters", [])]
        return cls(**data)

    @property
    def topic_def(self) -> Topic:
        return TOPICS[self.topic]


def _refuse(message: str, path: str) -> CoreError:
    return CoreError(422, "invalid", message, expression=[path])


def _extension(element: Any, url: str) -> dict[str, Any] | None:
    if not isinstance(element, dict):
        return None
    for ext in element.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def _int_extension(channel: dict[str, Any], url: str, name: str, low: int, high: int,
                   default: int) -> int:
    ext = _extension(channel, url)
    if ext is None:
        return default
    value = ext.get("valueUnsignedInt", ext.get("valuePositiveInt"))
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _refuse(f"{name} must be a whole number from {low} to {high}",
                      f"Subscription.channel.extension('{url}')")
    return value


def is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def private_address(host: str) -> str | None:
    """The first private, loopback, link-local or otherwise non-public address ``host`` is
    (or resolves to), or None. A name that does not resolve counts as refused: the server
    cannot tell where it would send."""
    try:
        return host if is_private(host) else None
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return f"{host} (does not resolve)"
    for info in infos:
        address = str(info[4][0])
        if is_private(address):
            return address
    return None


def parse_filters(topic: Topic, criteria: Any) -> list[tuple[str, list[str]]]:
    """The ``backport-filter-criteria`` extensions of ``_criteria``: every one must name the
    topic's resource type and filters the topic offers."""
    out: list[tuple[str, list[str]]] = []
    if not isinstance(criteria, dict):
        return out
    for index, ext in enumerate(criteria.get("extension") or []):
        if not isinstance(ext, dict) or ext.get("url") != FILTER_CRITERIA:
            continue
        path = f"Subscription._criteria.extension[{index}].valueString"
        text = ext.get("valueString")
        if not isinstance(text, str) or "?" not in text or len(text) > 1024:
            raise _refuse("a filter criteria is Type?name=value (e.g. "
                          f"{topic.resource_type}?patient=Patient/123)", path)
        res_type, _, query = text.partition("?")
        if res_type != topic.resource_type:
            raise _refuse(f"topic {topic.code} is about {topic.resource_type}, not "
                          f"{res_type}", path)
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            raise _refuse("a filter criteria names at least one filter", path)
        for name, value in pairs:
            if name not in topic.filters:
                raise _refuse(f"topic {topic.code} filters by {', '.join(sorted(topic.filters))}"
                              f"; not by {name!r}", path)
            values = [v.strip() for v in value.split(",") if v.strip()]
            if not values:
                raise _refuse(f"filter {name!r} has no value", path)
            out.append((name, values))
    return out


def read_subscription(resource: dict[str, Any], *, allow_private: bool) -> Config:
    """The Subscription as delivery will use it, or a 422 naming what is wrong."""
    criteria = resource.get("criteria")
    topic = TOPICS.get(criteria) if isinstance(criteria, str) else None
    if topic is None:
        raise _refuse(f"unknown subscription topic {criteria!r}; this server offers "
                      f"{', '.join(sorted(TOPICS))}", "Subscription.criteria")
    filters = parse_filters(topic, resource.get("_criteria"))
    channel = resource.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise _refuse(f"channel type {kind!r} is not offered; use rest-hook or websocket",
                      "Subscription.channel.type")
    status = str(resource.get("status", ""))
    config = Config(topic=topic.canonical, channel=kind, status=status, filters=filters)
    payload = channel.get("payload")
    if payload is not None and payload not in PAYLOAD_TYPES:
        raise _refuse(f"payload {payload!r}: notifications are sent as "
                      f"{' or '.join(PAYLOAD_TYPES)}", "Subscription.channel.payload")
    config.content_type = payload or "application/fhir+json"
    content = _extension(channel.get("_payload"), PAYLOAD_CONTENT)
    if content is not None:
        code = content.get("valueCode")
        if code not in CONTENTS:
            raise _refuse(f"payload content {code!r} is not one of {', '.join(CONTENTS)}",
                          "Subscription.channel._payload.extension.valueCode")
        config.content = str(code)
    elif payload is None:
        config.content = "empty"
    config.heartbeat = _int_extension(channel, HEARTBEAT_PERIOD, "heartbeat period", 0,
                                      MAX_HEARTBEAT, 0)
    config.timeout = _int_extension(channel, TIMEOUT, "timeout", 1, MAX_TIMEOUT, 10)
    config.max_count = _int_extension(channel, MAX_COUNT, "max count", 1, 100, 100)
    headers = channel.get("header") or []
    if len(headers) > MAX_HEADERS or not all(
            isinstance(h, str) and ":" in h and "\n" not in h and "\r" not in h
            for h in headers):
        raise _refuse(f"channel headers are at most {MAX_HEADERS} 'Name: value' lines",
                      "Subscription.channel.header")
    config.headers = list(headers)
    config.end = _end(resource.get("end"))
    if kind == "rest-hook":
        config.endpoint = _endpoint(channel.get("endpoint"), allow_private)
    return config


def _end(value: Any) -> int:
    if value is None:
        return 0
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise _refuse(f"end {value!r} is not an instant", "Subscription.end") from None
    if moment.tzinfo is None:
        raise _refuse("end needs a time zone", "Subscription.end")
    return int(moment.timestamp() * 1_000_000)


def _endpoint(endpoint: Any, allow_private: bool) -> str:
    path = "Subscription.channel.endpoint"
    if not isinstance(endpoint, str) or not endpoint:
        raise _refuse("a rest-hook subscription needs an endpoint (an http or https URL)", path)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(f"endpoint {endpoint!r} is not an http or https URL", path)
    if parts.username or parts.password:
        raise _refuse("the endpoint must not carry credentials; use channel.header", path)
    if not allow_private:
        private = private_address(parts.hostname)
        if private is not None:
            raise _refuse(f"endpoint {endpoint!r} is a private or loopback address "
                          f"({private}); SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE=1 allows it",
                          path)
    return endpoint
