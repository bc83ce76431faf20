"""The FHIR REST edge: HTTP in, ``FhirService`` call, HTTP out. No rules live here.

Each route declares which FHIR interaction each HTTP method performs; the CapabilityStatement is
built from this table, so it lists exactly what is served.
"""

from __future__ import annotations

import base64
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
from sonobridge.core.operations import OperationCall, Operations
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
from sonobridge.fhir.ranges import ranged
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.timeutil import now_us, to_instant
from sonobridge.web.baseurl import base_url

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_BODY_INTERACTIONS = {"create", "update", "patch", "conditional-update", "conditional-patch",
                      "transaction batch"}
_POINT_READS = {"read", "vread"}
_GENERIC_XML = ("application/xml", "text/xml")  # FHIR XML aliases, and documents' own types
# Writes are audited in their transaction by the service; metadata is public.
_AUDITED_ELSEWHERE = {"create", "update", "patch", "delete", "conditional-update",
                      "conditional-delete", "conditional-patch", "transaction batch",
                      "capabilities", "reindex", "operation"}
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
    FhirRoute("/${op}", {"GET": "operation", "POST": "operation"}),
    FhirRoute("/{type}/_history", {"GET": "history-type"}),
    FhirRoute("/{type}/_search", {"POST": "search-type"}),
    FhirRoute("/{type}/{id}/_history/{vid}", {"GET": "vread"}),
    FhirRoute("/{type}/{id}/_history", {"GET": "history-instance"}),
    FhirRoute("/{type}/${op}", {"GET": "operation", "POST": "operation"}),
    FhirRoute("/{type}/{id}/$everything", {"GET": "everything"}),
    FhirRoute("/{type}/{id}/${op}", {"GET": "operation", "POST": "operation"}),
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
                 capability: Callable[[str], dict[str, Any]] | None = None,
                 operations: Operations | None = None) -> None:
        self.service = service
        self.operations = operations or Operations()
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
        native = _native_binary(request, spec)
        printed = _report_pdf_read(request, spec)
        deferred: CoreError | None = None
        try:
            if not native and not printed:
                try:
                    fmt = response_format(request.query_params.get("_format"),
                                          request.headers.get("accept"),
                                          request.query_params.get("_pretty") == "true")
                except CoreError as exc:
                    # An operation may answer bytes in a media type of its own
                    # (ViewDefinition/$run?_format=csv): it is given the raw _format/Accept,
                    # and the 406 stands only if it answers a resource. Not for operations
                    # that change data: those are refused before they run.
                    if spec.interactions.get(request.method) != "operation" or \
                            self._changes_state(request):
                        raise
                    deferred = exc
            method = request.method
            interaction = spec.interactions.get("GET" if method == "HEAD" else method)
            if printed:
                interaction = "operation"  # the read as a PDF is DiagnosticReport/{id}/$pdf
            if interaction is None:
                allowed = sorted(spec.interactions)
                raise CoreError(405, "not-supported",
                                f"{method} is not allowed on {request.url.path}",
                                headers={"Allow": ", ".join(allowed)})
            body: bytes | None = None
            kind = "json"
            query = [(k, v) for k, v in request.query_params.multi_items()
                     if k not in ("_format", "_pretty") or (deferred and k == "_format")]
            if interaction.startswith("search") and method == "POST":
                query += await self._form(request)
                method = "GET"
            elif interaction in _BODY_INTERACTIONS:
                kind = request_format(request.headers.get("content-type"))
                body = await self._read_body(request)
            elif interaction == "operation" and method == "POST":
                media = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if media == FORM:
                    query += await self._form(request)
                else:
                    kind = request_format(request.headers.get("content-type"))
                    body = await self._read_body(request) or None
            base = base_url(request.headers, request.url.scheme, self.configured_base,
                            request.scope.get("server")) + "/fhir"
            params = {**request.path_params, "op": "pdf"} if printed else request.path_params
            req = FhirRequest(
                method=method, res_type=params.get("type"), res_id=params.get("id"),
                version_id=params.get("vid"), history=interaction.startswith("history"),
                query=query,
                headers={h: request.headers[h]
                         for h in (*_FORWARDED_HEADERS, *(("accept",) if deferred else ()))
                         if h in request.headers},
                body_kind=kind, base=base, compartment_type=params.get("compartment"),
                operation="$everything" if interaction == "everything" else
                (f"${params['op']}" if interaction == "operation" else None),
                policy=policy_of(request),
                source=request.client.host if request.client else "")
            if interaction in _POINT_READS and self.service.resources.store.inline_reads and \
                    fmt.kind == "json" and not fmt.pretty:
                # A SQLite point read takes tens of microseconds: cheaper than the hop to a
                # worker thread, whose scheduling adds a 30 ms p99 tail under load.
                status, headers, content = self._run(interaction, req, body, fmt)
            else:
                status, headers, content = await anyio.to_thread.run_sync(
                    self._run, interaction, req, body, fmt, deferred,
                    limiter=self._limiter())
            if native and status == 200:
                headers, content = _binary_content(headers, content, native)
                status, headers, content = ranged(request.headers.get("range"),
                                                  request.headers.get("if-range"), headers,
                                                  content)
        except CoreError as exc:
            self._audit_failure(request, spec, exc)
            return error_response(exc, fmt)
        if method == "HEAD":
            content = b""
        return Response(content, status, headers)

    def _changes_state(self, request: Request) -> bool:
        params = request.path_params
        level = "instance" if params.get("id") else "type" if params.get("type") else "system"
        try:
            return self.operations.find(params.get("op", ""), level,
                                        params.get("type")).affects_state
        except CoreError:
            return False  # unknown: the call itself answers why

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

    def _run(self, interaction: str, req: FhirRequest, body: bytes | None, fmt: Format,
             deferred: CoreError | None = None) -> tuple[int, dict[str, str], bytes]:
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
        elif interaction == "operation":
            resp = self._operation(req)
            if resp.status < 300 and isinstance(resp.body, bytes) and \
                    "Content-Type" in resp.headers:
                return resp.status, resp.headers, resp.body
            if deferred is not None:
                raise deferred  # a resource answer, and no FHIR format the client takes
        elif interaction == "transaction batch":
            resp = process_bundle(self.service, req.body, req.base, dict(req.headers),
                                  self.bundle_max_entries, req.policy)
        else:
            resp = self.service.handle(req)
            if interaction not in _AUDITED_ELSEWHERE:
                self._audit_read(interaction, req, resp)
        return to_http(resp, fmt)

    def _operation(self, req: FhirRequest) -> FhirResponse:
        """``$name`` at the system, type or instance level: the core's registry runs it."""
        assert req.operation is not None
        level = "instance" if req.res_id else "type" if req.res_type else "system"
        call = OperationCall(req.caller, req.operation[1:], level, req.method,
                             req.res_type, req.res_id, list(req.query), req.body,
                             dict(req.headers))
        result = self.operations.invoke(call)
        headers = dict(result.headers)
        if isinstance(result.body, bytes):
            headers["Content-Type"] = result.content_type or "application/octet-stream"
        events = self.service.resources.events
        if events.wants(Answered):
            resource = "/".join(p for p in (req.res_type, req.res_id) if p) or None
            events.emit(Answered(req.caller, "rest", "E", f"operation {req.operation}",
                                 resource=resource,
                                 patient=f"Patient/{req.res_id}"
                                 if req.res_type == "Patient" and req.res_id else None,
                                 query=urlencode(req.query) or None))
        return FhirResponse(result.status, result.body, headers)

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


def _report_pdf_read(request: Request, spec: FhirRoute) -> bool:
    """A DiagnosticReport read whose ``Accept`` names ``application/pdf`` and no FHIR format:
    answered by the ``$pdf`` operation (the printable report, ``core/pdf``)."""
    accept = request.headers.get("accept")
    if not accept or "application/pdf" not in accept.lower() or \
            request.query_params.get("_format") or \
            request.path_params.get("type") != "DiagnosticReport" or \
            spec.interactions.get("GET") != "read":
        return False
    try:
        response_format(None, accept)
    except CoreError:
        return True
    return False


def _native_binary(request: Request, spec: FhirRoute) -> list[str]:
    """The media types asked for when a Binary is read with an ``Accept`` that names no FHIR
    format (FHIR R4 Binary: the content is then served in its native form; IHE MHD ITI-68
    Retrieve Document fetches ``DocumentReference.content.attachment.url`` this way), else
    an empty list (the Binary resource as FHIR JSON/XML, as for any read)."""
    accept = request.headers.get("accept")
    if not accept or request.query_params.get("_format") or \
            request.path_params.get("type") != "Binary" or \
            spec.interactions.get("GET") not in _POINT_READS:
        return []
    asked = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    try:
        response_format(None, accept)
    except CoreError:  # no FHIR format acceptable: the client wants the bytes
        return asked
    # ``application/xml``/``text/xml`` are no explicit FHIR type (R4 Binary): asked of a
    # Binary that is such a document (a WS/T 500 CDA, MHD ITI-68), they get its bytes;
    # of any other Binary, the resource as FHIR XML (``_binary_content``).
    if asked and all(a in _GENERIC_XML for a in asked):
        return asked
    return []


def _binary_content(headers: dict[str, str], content: bytes, accepted: list[str]
                    ) -> tuple[dict[str, str], bytes]:
    """A Binary's bytes with its own content type, if the client accepts that type."""
    binary = json_loads(content)
    media = str(binary.get("contentType") or "application/octet-stream")
    kind = media.split(";")[0].strip().lower()
    if kind not in accepted and all(a in _GENERIC_XML for a in accepted):
        return {**headers, "Content-Type": f"{accepted[0]}; charset=utf-8"}, \
            render(binary, Format("xml", accepted[0]))
    if not any(a in (kind, "*/*", kind.split("/")[0] + "/*") for a in accepted):
        raise CoreError(406, "not-supported", f"this Binary is {kind}; Accept names "
                        f"{', '.join(accepted)}", expression=["Binary.contentType"])
    try:
        data = base64.b64decode(str(binary.get("data") or ""), validate=True)
    except ValueError:
        raise CoreError(500, "exception", "the stored Binary data is not base64") from None
    return {**headers, "Content-Type": media}, data


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
