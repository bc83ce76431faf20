"""The FHIR REST edge: HTTP in, ``FhirService`` call, HTTP out. No rules live here.

Each route declares which FHIR interaction each HTTP method performs; the CapabilityStatement is
built from this table, so it lists exactly what is served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from sonobridge.core.access import Access
from sonobridge.core.audit import patient_of
from sonobridge.core.errors import CoreError, info_outcome
from sonobridge.core.events import Answered
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import type_param
from sonobridge.fhir.bundles import process_bundle
from sonobridge.fhir.formats import (
    FORM,
    JSON,
    Format,
    parse_body,
    render,
    request_format,
    response_format,
)
from sonobridge.fhir.interactions import FhirRequest, FhirResponse, Interactions
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.timeutil import now_us, to_instant
from sonobridge.web.baseurl import base_url

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_BODY_INTERACTIONS = {"create", "update", "patch", "conditional-update", "conditional-patch",
                      "transaction batch"}
_POINT_READS = {"read", "vread"}
# Writes are audited in their transaction by the service; metadata is public.
_AUDITED_ELSEWHERE = {"create", "update", "patch", "delete", "conditional-update",
                      "conditional-delete", "conditional-patch", "transaction batch",
                      "capabilities", "reindex"}
_ACTIONS = {"create": "C", "update": "U", "patch": "U", "delete": "D", "read": "R",
            "vread": "R", "conditional-update": "U", "conditional-delete": "D",
            "conditional-patch": "U"}
_FORWARDED_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-none-exist",
                      "prefer")


@dataclass(frozen=True)
class FhirRoute:
    """A URL pattern and the FHIR interaction each HTTP method performs on it."""

    path: str
    interactions: dict[str, str]


ROUTES = [
    FhirRoute("/metadata", {"GET": "capabilities"}),
    FhirRoute("/", {"GET": "search-system", "POST": "transaction batch"}),
    FhirRoute("/_search", {"POST": "search-system"}),
    FhirRoute("/_history", {"GET": "history-system"}),
    FhirRoute("/$reindex", {"POST": "reindex"}),
    FhirRoute("/{type}/_history", {"GET": "history-type"}),
    FhirRoute("/{type}/_search", {"POST": "search-type"}),
    FhirRoute("/{type}/{id}/_history/{vid}", {"GET": "vread"}),
    FhirRoute("/{type}/{id}/_history", {"GET": "history-instance"}),
    FhirRoute("/{type}/{id}/$everything", {"GET": "everything"}),
    FhirRoute("/{type}/{id}/{compartment}", {"GET": "search-compartment"}),
    FhirRoute("/{type}/{id}", {"GET": "read", "PUT": "update", "PATCH": "patch",
                               "DELETE": "delete"}),
    FhirRoute("/{type}", {"GET": "search-type", "POST": "create", "PUT": "conditional-update",
                          "DELETE": "conditional-delete", "PATCH": "conditional-patch"}),
]


def served_interactions() -> set[str]:
    return {code for route in ROUTES for value in route.interactions.values()
            for code in value.split()}


class FhirApp:
    """Holds the service and settings the endpoint needs; ``routes()`` gives Starlette routes."""

    def __init__(self, service: Interactions, *, configured_base: str | None, max_body: int,
                 bundle_max_entries: int, db_threads: int = 2,
                 capability: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.service = service
        self.db_threads = db_threads
        self._threads: anyio.CapacityLimiter | None = None
        self.configured_base = configured_base
        self.max_body = max_body
        self.bundle_max_entries = bundle_max_entries
        self.published = to_instant(now_us())
        self._capability: dict[str, dict[str, Any]] = {}
        # Built by the app from this router's table (``conformance/capability.py``).
        self._build_capability = capability

    def mount(self, prefix: str = "/fhir") -> list[BaseRoute]:
        """Routes for the app: the base URL itself (no redirect to a trailing slash: clients
        POST bundles to ``/fhir``), then everything under it."""
        root = next(spec for spec in ROUTES if spec.path == "/")
        return [Route(prefix, self._endpoint(root), methods=ALL_METHODS, name="fhir:base"),
                Mount(prefix, app=Router(routes=self.routes()))]

    def routes(self) -> list[Route]:
        out = []
        for spec in ROUTES:
            out.append(Route(spec.path, self._endpoint(spec), methods=ALL_METHODS,
                             name=f"fhir:{spec.path}"))
        out.append(Route("/{rest:path}", self._not_found, methods=ALL_METHODS,
                         name="fhir:unknown"))
        return out

    def _endpoint(self, spec: FhirRoute) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self.serve(request, spec)

        return endpoint

    async def _not_found(self, request: Request) -> Response:
        fmt = _safe_format(request)
        return error_response(CoreError(404, "not-supported",
                                        f"no FHIR interaction at {request.url.path}"), fmt)

    async def serve(self, request: Request, spec: FhirRoute) -> Response:
        fmt = JSON
        try:
            fmt = response_format(request.query_params.get("_format"),
                                  request.headers.get("accept"),
                                  request.query_params.get("_pretty") == "true")
            method = request.method
            interaction = spec.interactions.get("GET" if method == "HEAD" else method)
            if interaction is None:
                allowed = sorted(spec.interactions)
                raise CoreError(405, "not-supported",
                                f"{method} is not allowed on {request.url.path}",
                                headers={"Allow": ", ".join(allowed)})
            body: bytes | None = None
            kind = "json"
            query = [(k, v) for k, v in request.query_params.multi_items()
                     if k not in ("_format", "_pretty")]
            if interaction.startswith("search") and method == "POST":
                query += await self._form(request)
                method = "GET"
            elif interaction in _BODY_INTERACTIONS:
                kind = request_format(request.headers.get("content-type"))
                body = await self._read_body(request)
            base = base_url(request.headers, request.url.scheme, self.configured_base,
                            request.scope.get("server")) + "/fhir"
            params = request.path_params
            req = FhirRequest(
                method=method, res_type=params.get("type"), res_id=params.get("id"),
                version_id=params.get("vid"), history=interaction.startswith("history"),
                query=query,
                headers={h: request.headers[h] for h in _FORWARDED_HEADERS
                         if h in request.headers},
                body_kind=kind, base=base, compartment_type=params.get("compartment"),
                operation="$everything" if interaction == "everything" else None,
                policy=policy_of(request),
                source=request.client.host if request.client else "")
            if interaction in _POINT_READS and self.service.resources.store.inline_reads and \
                    fmt.kind == "json" and not fmt.pretty:
                # A SQLite point read takes tens of microseconds: cheaper than the hop to a
                # worker thread, whose scheduling adds a 30 ms p99 tail under load.
                status, headers, content = self._run(interaction, req, body, fmt)
            else:
                status, headers, content = await anyio.to_thread.run_sync(
                    self._run, interaction, req, body, fmt, limiter=self._limiter())
        except CoreError as exc:
            self._audit_failure(request, spec, exc)
            return error_response(exc, fmt)
        if method == "HEAD":
            content = b""
        return Response(content, status, headers)

    def _limiter(self) -> anyio.CapacityLimiter:
        """Blocking work runs on a few threads, not anyio's forty: with one CPU-bound Python
        process, more threads only queue on the GIL and stretch every request's latency
        (8 concurrent searches: p95 halved with 2 threads instead of 40, on 2 cores)."""
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(self.db_threads)
        return self._threads

    async def _form(self, request: Request) -> list[tuple[str, str]]:
        """POST _search: the parameters in an x-www-form-urlencoded body."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != FORM:
            raise CoreError(415, "not-supported",
                            f"POST _search takes {FORM}, not {media or 'no Content-Type'}")
        body = await self._read_body(request)
        try:
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise CoreError(400, "structure", "the form body is not UTF-8") from None

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdecimal() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
        return b"".join(chunks)

    def _run(self, interaction: str, req: FhirRequest, body: bytes | None, fmt: Format
             ) -> tuple[int, dict[str, str], bytes]:
        """Everything blocking for one request, run once in the thread pool."""
        if body is not None:
            req.body = parse_body(body, "json" if req.body_kind == "json-patch" else req.body_kind)
        if interaction == "capabilities":
            resp = FhirResponse(200, self.capability(req.base))
        elif interaction == "reindex":
            from sonobridge.core.search.reindex import reindex

            if not Access.may_reindex(req.policy):
                raise CoreError(403, "forbidden", "$reindex is for the system administrator")
            types, _ = type_param(req.query)
            count = reindex(self.service.resources.store, types or None)
            resp = FhirResponse(200, info_outcome(f"reindexed {count} resources"))
        elif interaction == "transaction batch":
            resp = process_bundle(self.service, req.body, req.base, dict(req.headers),
                                  self.bundle_max_entries, req.policy)
        else:
            resp = self.service.handle(req)
            if interaction not in _AUDITED_ELSEWHERE:
                self._audit_read(interaction, req, resp)
        return to_http(resp, fmt)

    def _audit_read(self, interaction: str, req: FhirRequest, resp: FhirResponse) -> None:
        """Reads and searches are told just after the response (writes are audited in their
        own transaction by the core)."""
        events = self.service.resources.events
        if not events.wants(Answered):
            return
        patient = None
        query = None
        resource: str | None
        if interaction in _POINT_READS:
            resource = f"{req.res_type}/{req.res_id}"
            if isinstance(resp.body, bytes) and req.res_type != "Patient":
                patient = patient_of(json_loads(resp.body))
            elif req.res_type == "Patient":
                patient = resource
            action = "R"
        else:
            resource = req.res_type
            query = urlencode(req.query)
            if req.res_type == "Patient" and req.res_id:
                patient = f"Patient/{req.res_id}"
            action = "E"
        events.emit(Answered(req.caller, "rest", action, interaction, resource=resource,
                             patient=patient, query=query))

    def _audit_failure(self, request: Request, spec: FhirRoute, exc: CoreError) -> None:
        events = self.service.resources.events
        policy = request.scope.get("state", {}).get("policy")
        if not events.wants(Answered) or not isinstance(policy, Policy):
            return
        interaction = spec.interactions.get(request.method, "unknown")
        params = request.path_params
        resource = "/".join(p for p in (params.get("type"), params.get("id")) if p) or None
        caller = Caller(policy, "", request.client.host if request.client else "")
        events.emit(Answered(caller, "rest", _ACTIONS.get(interaction, "E"), interaction,
                             outcome="8" if exc.status >= 500 else "4", resource=resource,
                             query=request.url.query or None,
                             detail=f"{exc.status}: {str(exc)[:200]}"))

    def capability(self, base: str) -> dict[str, Any]:
        statement = self._capability.get(base)
        if statement is None:
            if self._build_capability is None:
                raise CoreError(501, "not-supported", "no CapabilityStatement is configured")
            statement = self._build_capability(base)
            self._capability[base] = statement
        return statement


def policy_of(request: Request) -> Policy:
    """The policy the authorization guard attached; none attached fails closed."""
    policy = request.scope.get("state", {}).get("policy")
    if not isinstance(policy, Policy):
        raise CoreError(401, "security", "no authorization decision was made for this request",
                        headers={"WWW-Authenticate": 'Bearer realm="sonobridge"'})
    return policy


def _too_large(limit: int) -> CoreError:
    return CoreError(413, "too-costly", f"the request body is larger than {limit} bytes")


def _safe_format(request: Request) -> Format:
    try:
        return response_format(request.query_params.get("_format"),
                               request.headers.get("accept"))
    except CoreError:
        return JSON


def to_http(resp: FhirResponse, fmt: Format) -> tuple[int, dict[str, str], bytes]:
    headers = dict(resp.headers)
    if resp.body is None:
        return resp.status, headers, b""
    headers["Content-Type"] = fmt.content_type
    return resp.status, headers, render(resp.body, fmt)


def error_response(exc: CoreError, fmt: Format) -> Response:
    try:
        content = render(exc.outcome(), fmt)
    except CoreError:
        fmt = JSON
        content = render(exc.outcome(), fmt)
    headers = {"Content-Type": fmt.content_type, **exc.headers}
    return Response(content, exc.status, headers)
