"""A FHIR interaction as REST and bundle entries state it, turned into a core call and back.

``FhirRequest`` is what a URL, its headers and a body (or a bundle entry's ``request``) say;
``Interactions.handle`` picks the core call (``core/resources.py``), hands it the caller and
the conditions the headers carry, and builds the ``FhirResponse``: status, ``ETag``,
``Last-Modified``, ``Location``, and the body ``Prefer: return=`` asks for. The REST edge and
the bundle processor both call ``handle``, so a transaction entry behaves exactly like the
same request sent alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sonobridge.core.errors import CoreError, info_outcome
from sonobridge.core.history import history
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import Patch, Resources, SearchSpec, Written
from sonobridge.fhir.headers import etag_matches, parse_etag_version, prefer
from sonobridge.store.resources import StoredResource, Writer
from sonobridge.store.timeutil import from_http_date


@dataclass
class FhirRequest:
    """A FHIR interaction as parsed from a URL and headers (HTTP or a bundle entry)."""

    method: str
    res_type: str | None = None
    res_id: str | None = None
    version_id: str | None = None
    history: bool = False
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    body_kind: str = "json"
    base: str = ""
    # For a create inside a transaction: the id the bundle's urn:uuid references were given.
    assigned_id: str | None = None
    # Patient/123/Observation: the type searched inside the compartment (or "*").
    compartment_type: str | None = None
    operation: str | None = None  # "$everything"
    # Who asks, with which scopes: every interaction checks it (``core/access.py``).
    policy: Policy = field(default_factory=Policy.open)
    source: str = ""  # the client's network address, for the audit trail

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    @property
    def caller(self) -> Caller:
        return Caller(self.policy, self.base, self.source)


@dataclass
class FhirResponse:
    status: int
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stored: StoredResource | None = None


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": stored.last_modified}


class Interactions:
    """Dispatches ``FhirRequest``s to the core's ``Resources``."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def handle(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        method = req.method
        if req.res_id is not None and req.res_id.startswith("$"):
            raise CoreError(400, "not-supported",
                            f"operation {req.res_id} is not supported by this server")
        if req.res_type == "AuditEvent" and method in ("PATCH", "DELETE"):
            raise CoreError(405, "not-supported", "the audit trail is append-only: an "
                            "AuditEvent may be created (IHE RESTful ATNA), never changed")
        if req.history:
            if method not in ("GET", "HEAD"):
                raise CoreError(405, "not-supported", "history is read-only")
            return FhirResponse(200, history(self.resources, req.caller, req.res_type,
                                             req.res_id, req.query))
        if req.version_id is not None:
            if method not in ("GET", "HEAD"):
                raise CoreError(405, "not-supported", "a version is read-only")
            assert req.res_type is not None and req.res_id is not None
            return self._conditional_read(req, self.resources.vread(
                req.caller, req.res_type, req.res_id, req.version_id, writer))
        if req.res_type is None:
            if method in ("GET", "HEAD"):
                return self.search(req, writer)
            raise CoreError(400, "not-supported", "this request needs a resource type")
        if req.operation is not None or req.compartment_type is not None:
            if method not in ("GET", "HEAD"):
                raise CoreError(405, "not-supported", f"{method} is not allowed here")
            return self.search(req, writer)
        if req.res_id is not None:
            handlers = {"GET": self.read, "HEAD": self.read, "PUT": self.update,
                        "PATCH": self.patch, "DELETE": self.delete}
        else:
            handlers = {"POST": self.create, "GET": self.search, "HEAD": self.search,
                        "PUT": self.conditional_update, "DELETE": self.conditional_delete,
                        "PATCH": self.conditional_patch}
        handler = handlers.get(method)
        if handler is None:
            raise CoreError(405, "not-supported", f"{method} is not allowed here")
        return handler(req, writer)

    # --------------------------------------------------------------- reads

    def read(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        stored = self.resources.read(req.caller, req.res_type, req.res_id, writer)
        return self._conditional_read(req, stored)

    @staticmethod
    def _conditional_read(req: FhirRequest, stored: StoredResource) -> FhirResponse:
        headers = version_headers(stored)
        inm = req.headers.get("if-none-match")
        if inm and etag_matches(inm, stored.version_id):
            return FhirResponse(304, None, headers, stored)
        ims = req.headers.get("if-modified-since")
        if ims and not inm:
            since = from_http_date(ims)
            if since is not None and stored.last_updated // 1_000_000 <= since // 1_000_000:
                return FhirResponse(304, None, headers, stored)
        return FhirResponse(200, stored.content, headers, stored)

    def search(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        spec = SearchSpec(req.res_type, list(req.query), patient=req.res_id,
                          compartment_type=req.compartment_type,
                          everything=req.operation == "$everything",
                          strict=prefer(req.headers).get("handling") == "strict")
        result = self.resources.search(req.caller, spec, writer)
        return FhirResponse(200, result.bundle, {"X-Search-Statements": str(result.statements)})

    # --------------------------------------------------------------- writes

    @staticmethod
    def _if_match(req: FhirRequest) -> int | None:
        value = req.headers.get("if-match")
        return None if value is None else parse_etag_version(value)

    def create(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None
        written = self.resources.create(req.caller, req.res_type, req.body,
                                        if_none_exist=req.headers.get("if-none-exist"),
                                        assigned_id=req.assigned_id, writer=writer)
        return self.write_response(req, written)

    def update(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        written = self.resources.update(req.caller, req.res_type, req.res_id, req.body,
                                        if_match=self._if_match(req), writer=writer)
        return self.write_response(req, written)

    def patch(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        written = self.resources.patch(req.caller, req.res_type, req.res_id,
                                       Patch(req.body, req.body_kind),
                                       if_match=self._if_match(req), writer=writer)
        return self.write_response(req, written)

    def delete(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        stored = self.resources.delete(req.caller, req.res_type, req.res_id,
                                       if_match=self._if_match(req), writer=writer)
        minimal = prefer(req.headers).get("return") == "minimal"
        if stored is None:
            message = f"{req.res_type}/{req.res_id} did not exist or was already deleted"
            return FhirResponse(204 if minimal else 200,
                                None if minimal else info_outcome(message))
        message = f"deleted {req.res_type}/{req.res_id} (version {stored.version_id})"
        return FhirResponse(204 if minimal else 200, None if minimal else info_outcome(message),
                            version_headers(stored), stored)

    def conditional_update(self, req: FhirRequest, writer: Writer | None = None
                           ) -> FhirResponse:
        assert req.res_type is not None
        written = self.resources.conditional_update(
            req.caller, req.res_type, req.query, req.body, if_match=self._if_match(req),
            writer=writer)
        return self.write_response(req, written)

    def conditional_delete(self, req: FhirRequest, writer: Writer | None = None
                           ) -> FhirResponse:
        assert req.res_type is not None
        count = self.resources.conditional_delete(req.caller, req.res_type, req.query, writer)
        if prefer(req.headers).get("return") == "minimal":
            return FhirResponse(204)
        return FhirResponse(200, info_outcome(f"deleted {count} {req.res_type} resource"
                                              f"{'' if count == 1 else 's'}"))

    def conditional_patch(self, req: FhirRequest, writer: Writer | None = None
                          ) -> FhirResponse:
        assert req.res_type is not None
        written = self.resources.conditional_patch(
            req.caller, req.res_type, req.query, Patch(req.body, req.body_kind),
            if_match=self._if_match(req), writer=writer)
        return self.write_response(req, written)

    @staticmethod
    def write_response(req: FhirRequest, written: Written) -> FhirResponse:
        """ETag, Last-Modified, Location, and a body as ``Prefer: return=`` asks."""
        stored = written.stored
        status = 201 if written.created else 200
        headers = version_headers(stored)
        location = f"{req.base}/{stored.version_url}"
        headers["Location" if status == 201 else "Content-Location"] = location
        wanted = prefer(req.headers).get("return", "representation")
        if wanted == "minimal":
            return FhirResponse(status, None, headers, stored)
        if wanted == "operationoutcome":
            verb = "created" if status == 201 else "updated"
            return FhirResponse(status, info_outcome(f"{verb} {stored.version_url}"),
                                headers, stored)
        return FhirResponse(status, stored.content, headers, stored)
