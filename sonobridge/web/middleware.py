"""Pure ASGI middleware for every request: request id, metrics, access log, body size limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming bodies pass through untouched and the hot
read path pays for one small wrapper only.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

access_log = logging.getLogger("sonobridge.access")

REQUESTS = Counter("sonobridge_http_requests_total", "HTTP requests answered",
                   ["method", "route", "status"])
LATENCY = Histogram("sonobridge_http_request_duration_seconds", "HTTP request latency",
                    ["method", "route"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1, 2.5, 5, 10, 30))
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def route_template(scope: Scope) -> str:
    """The matched route's pattern including its mount (``/fhir/{type}/{id}``)."""
    route = scope.get("route")
    if route is None:
        return "<unmatched>"
    path = getattr(route, "path", "") or ""
    mount = scope.get("root_path", "")
    app_root = scope.get("app_root_path", "")
    if app_root and mount.startswith(app_root):
        mount = mount[len(app_root):]
    return f"{mount}{path}" or "/"


class RequestContextMiddleware:
    """``X-Request-ID`` in and out, Prometheus metrics and one access log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500
        size = 0
        header_value = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", header_value)]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d", method, route, status, extra={
                    "request_id": request_id, "status": status,
                    "duration_ms": round(elapsed * 1000, 3), "bytes": size})


class BodyLimitMiddleware:
    """Refuse a request whose declared ``Content-Length`` is over the limit (413).

    Bodies without a length (chunked) are counted by the endpoints that read them.
    ``exempt`` prefixes (DICOM uploads, which stream to disk) have their own limits.
    """

    def __init__(self, app: ASGIApp, max_body: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not (self.exempt and scope["path"].startswith(self.exempt)):
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > self.max_body:
                        await _send_413(scope, send, self.max_body)
                        return
                    break
        await self.app(scope, receive, send)


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    body: dict[str, Any]
    message = f"the request body is larger than {limit} bytes"
    if scope["path"].startswith("/fhir"):
        body = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "too-costly", "diagnostics": message}]}
        content_type = b"application/fhir+json; charset=utf-8"
    else:
        body = {"error": "payload_too_large", "message": message}
        content_type = b"application/json"
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


_FORWARDED = (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix",
              b"x-forwarded-for", b"x-forwarded-port", b"forwarded")


class TrustedProxyMiddleware:
    """``X-Forwarded-*`` headers are believed only from a configured proxy
    (``SONOBRIDGE_TRUSTED_PROXIES``, loopback by default): from anyone else they are removed
    before any edge reads them, so a client cannot make the server write links (token
    audiences, Location headers, BulkDataURIs) to a host of its choosing."""

    def __init__(self, app: ASGIApp, trusted: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def _trusted(self, client: Any) -> bool:
        if not client:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._trusted(scope.get("client")) and any(
                name in _FORWARDED for name, _ in scope["headers"]):
            scope = {**scope, "headers": [(name, value) for name, value in scope["headers"]
                                          if name not in _FORWARDED]}
        await self.app(scope, receive, send)


_PHI = ("/fhir", "/dicomweb", "/wado")
_PUBLIC = ("/fhir/metadata", "/fhir/.well-known/")


class SecurityHeadersMiddleware:
    """Every answer says ``X-Content-Type-Options: nosniff`` (a browser never guesses an
    HTML page out of a resource); answers that may hold patient data (FHIR, DICOMweb,
    WADO-URI, but not discovery) say ``Cache-Control: no-store``: no shared or browser cache
    keeps them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        phi = path.startswith(_PHI) and not path.startswith(_PUBLIC)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not (phi and k.lower() == b"cache-control")
                           and k.lower() != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                if phi:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FhirGZipMiddleware:
    """gzip for the FHIR answers of 4 KB and more, when the client accepts it (Starlette's
    ``GZipMiddleware``): a CapabilityStatement of 880 KB or a page of a search shrinks
    five- to tenfold. Only under ``/fhir``: DICOMweb frames are compressed already and its
    metadata is gzipped by its own route; a small read is not worth the CPU."""

    def __init__(self, app: ASGIApp, prefix: str = "/fhir", minimum_size: int = 4096) -> None:
        from starlette.middleware.gzip import GZipMiddleware

        self.app = app
        self.prefix = prefix
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=5)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
