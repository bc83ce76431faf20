"""The FHIR interactions, independent of HTTP: one ``FhirRequest`` in, one ``FhirResponse`` out.

The REST edge and the bundle processor both call ``FhirService.handle``, so a transaction entry
behaves exactly like the same request sent alone. Writes run in the caller's open ``Writer``
(a transaction) or in one of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from sonobridge.core import access
from sonobridge.core.errors import FhirError, info_outcome, not_found
from sonobridge.core.patch import apply_fhirpath_patch, apply_json_patch
from sonobridge.core.policy import Policy
from sonobridge.core.validation import check_type, is_valid_id, validate
from sonobridge.fhir.headers import etag_matches, parse_etag_version, prefer
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.resources import (
    ResourceStore,
    StoredResource,
    VersionConflict,
    Writer,
    new_id,
)
from sonobridge.store.timeutil import from_http_date

if TYPE_CHECKING:
    from sonobridge.core.audit import AuditTrail
    from sonobridge.core.search.engine import SearchEngine

CONDITIONAL_DELETE_MAX = 100


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
    # Who asks, with which scopes: every interaction checks it (``fhir/access.py``).
    policy: Policy = field(default_factory=Policy.open)
    source: str = ""  # the client's network address, for the audit trail
    # False when the caller audits the change itself, in the same transaction (an HL7 message
    # is one Import event naming what it changed, not one event per resource it wrote).
    audited: bool = True

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass
class FhirResponse:
    status: int
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stored: StoredResource | None = None


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": stored.last_modified}


class FhirService:
    """Runs interactions against the resource store."""

    def __init__(self, store: ResourceStore, engine: SearchEngine | None = None, *,
                 history_page_max: int = 1000) -> None:
        self.store = store
        self.engine = engine
        self.history_page_max = history_page_max
        self.audit: AuditTrail | None = None  # set by the core

    def _record(self, writer: Writer, req: FhirRequest, action: str, subtype: str,
                res_id: str, body: Any = None) -> None:
        """Audit a change inside its transaction (it commits or rolls back with it)."""
        if self.audit is None or not req.audited:
            return
        from sonobridge.core.audit import Record, patient_of

        policy = req.policy
        patient = patient_of(body) if isinstance(body, dict) else None
        if patient is None and policy.patient:
            patient = f"Patient/{policy.patient}"
        self.audit.in_transaction(writer, Record(
            "rest", action, subtype, who=policy.subject, client_id=policy.client_id,
            fhir_user=policy.fhir_user, ip=req.source, resource=f"{req.res_type}/{res_id}",
            patient=patient))

    # --------------------------------------------------------------- dispatch

    def handle(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        if req.res_type is not None:
            check_type(req.res_type)
        if req.res_id is not None and req.res_id.startswith("$"):
            raise FhirError(400, "not-supported",
                            f"operation {req.res_id} is not supported by this server")
        if req.res_id is not None and not is_valid_id(req.res_id):
            raise FhirError(400, "invalid", f"invalid resource id {req.res_id!r}: ids match "
                            "[A-Za-z0-9-.]{1,64}")
        method = req.method
        if req.res_type == "AuditEvent" and method in ("PATCH", "DELETE"):
            raise FhirError(405, "not-supported", "the audit trail is append-only: an "
                            "AuditEvent may be created (IHE RESTful ATNA), never changed")
        if req.history:
            if method not in ("GET", "HEAD"):
                raise FhirError(405, "not-supported", "history is read-only")
            from sonobridge.core.history import history

            return history(self, req)
        if req.version_id is not None:
            if method not in ("GET", "HEAD"):
                raise FhirError(405, "not-supported", "a version is read-only")
            return self.vread(req, writer)
        if req.res_type is None:
            if method in ("GET", "HEAD"):
                return self.search(req, writer)
            raise FhirError(400, "not-supported", "this request needs a resource type")
        if req.operation is not None or req.compartment_type is not None:
            if method not in ("GET", "HEAD"):
                raise FhirError(405, "not-supported", f"{method} is not allowed here")
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
            raise FhirError(405, "not-supported", f"{method} is not allowed here")
        return handler(req, writer)

    def _in_writer(self, writer: Writer | None, fn: Any, req: FhirRequest) -> FhirResponse:
        if writer is not None:
            return fn(req, writer)
        with self.store.write() as own:
            return fn(req, own)

    # --------------------------------------------------------------- reads

    def read(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        if writer is not None:
            stored = writer.read(req.res_type, req.res_id)
        else:
            stored = self.store.read(req.res_type, req.res_id)
        self._may(req, writer, "r")
        if stored is None:
            raise not_found(f"{req.res_type}/{req.res_id} is not known")
        if stored.deleted:
            raise FhirError(410, "deleted", f"{req.res_type}/{req.res_id} was deleted",
                            headers=version_headers(stored))
        return self._conditional_read(req, stored)

    def vread(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        if not (req.version_id or "").isdigit():
            raise FhirError(400, "invalid", f"invalid version id {req.version_id!r}")
        stored = self.store.vread(req.res_type, req.res_id, int(req.version_id or 0))
        self._may(req, writer, "r")
        if stored is None:
            raise not_found(f"{req.res_type}/{req.res_id} has no version {req.version_id}")
        if stored.deleted:
            raise FhirError(410, "deleted", f"version {stored.version_id} of "
                            f"{req.res_type}/{req.res_id} is a deletion",
                            headers=version_headers(stored))
        return self._conditional_read(req, stored)

    def _may(self, req: FhirRequest, writer: Writer | None, permission: str,
             res_id: str | None = None) -> None:
        """403 unless the policy allows ``permission`` on this resource (type rights, then
        compartment and query filters, as the index stands in this transaction)."""
        policy = req.policy
        if policy.unrestricted:
            return
        assert req.res_type is not None and self.engine is not None
        access.require(policy, req.res_type, permission)
        res_id = res_id or req.res_id
        assert res_id is not None
        if writer is not None:
            writer.flush()
            access.check_one(self.engine, writer.conn, policy, req.base, permission,
                             req.res_type, res_id)
            return
        with self.store.reader.connect() as conn:
            access.check_one(self.engine, conn, policy, req.base, permission, req.res_type,
                             res_id)

    def _conditional_read(self, req: FhirRequest, stored: StoredResource) -> FhirResponse:
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

    # --------------------------------------------------------------- writes

    def create(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None
        access.require(req.policy, req.res_type, "c")
        validate(req.body, req.res_type)
        return self._in_writer(writer, self._create, req)

    def _create(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        assert req.res_type is not None
        condition = req.headers.get("if-none-exist")
        if condition:
            found = self.find(writer, req.res_type, condition, req.base, limit=2)
            if len(found) > 1:
                raise FhirError(412, "duplicate", f"If-None-Exist: {condition!r} matches more "
                                f"than one {req.res_type}")
            if found:  # already there: nothing is created
                self._may(req, writer, "r", found[0])
                stored = writer.read(req.res_type, found[0])
                assert stored is not None
                return self.write_response(req, 200, stored)
        # The server assigns the id; one in the body is ignored (FHIR create).
        stored = writer.create(req.res_type, req.body, req.assigned_id)
        self._may(req, writer, "c", stored.id)
        self._record(writer, req, "C", "create", stored.id, req.body)
        return self.write_response(req, 201, stored)

    def update(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        validate(req.body, req.res_type)
        body_id = req.body.get("id")
        if body_id is None:
            raise FhirError(400, "required", "the resource must carry its id on update",
                            expression=[f"{req.res_type}.id"])
        if body_id != req.res_id:
            raise FhirError(400, "invalid", f"id {body_id!r} in the body does not match "
                            f"{req.res_id!r} in the URL", expression=[f"{req.res_type}.id"])
        return self._in_writer(writer, self._update, req)

    def _if_match(self, req: FhirRequest) -> int | None:
        value = req.headers.get("if-match")
        return None if value is None else parse_etag_version(value)

    def _update(self, req: FhirRequest, writer: Writer, method: str = "PUT") -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        if req.res_type == "AuditEvent" and writer.read("AuditEvent", req.res_id) is not None:
            raise FhirError(405, "not-supported", "the audit trail is append-only: an "
                            "AuditEvent may be created (IHE RESTful ATNA), never changed")
        if not req.policy.unrestricted:
            access.require(req.policy, req.res_type, "u")
            current = writer.read(req.res_type, req.res_id)
            if current is not None and not current.deleted:
                self._may(req, writer, "u")  # the resource as it is now
            else:
                access.require(req.policy, req.res_type, "c")  # update as create
        try:
            result = writer.update(req.res_type, req.res_id, req.body, self._if_match(req),
                                   method=method)
        except VersionConflict as exc:
            raise FhirError(412, "conflict", f"{req.res_type}/{req.res_id}: {exc}") from None
        self._may(req, writer, "u")  # ...and as it would be
        self._record(writer, req, "C" if result.created else "U",
                     "patch" if method == "PATCH" else "update", req.res_id, req.body)
        return self.write_response(req, 201 if result.created else 200, result.stored)

    def patch(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        return self._in_writer(writer, self._patch, req)

    def _patch(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        current = writer.read(req.res_type, req.res_id)
        if current is None or current.content is None:
            raise not_found(f"{req.res_type}/{req.res_id} is not known")
        resource = json_loads(current.content)
        if req.body_kind == "json-patch":
            patched = apply_json_patch(resource, req.body)
        else:
            patched = apply_fhirpath_patch(resource, req.body)
        validate(patched, req.res_type, status=422)
        if patched.get("id") != req.res_id:
            raise FhirError(422, "processing", "a patch may not change the resource id",
                            expression=[f"{req.res_type}.id"])
        patched_req = FhirRequest("PATCH", req.res_type, req.res_id, headers=req.headers,
                                  body=patched, base=req.base, policy=req.policy,
                                  source=req.source)
        return self._update(patched_req, writer, method="PATCH")

    def delete(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        return self._in_writer(writer, self._delete, req)

    def _delete(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        assert req.res_type is not None and req.res_id is not None
        if not req.policy.unrestricted:
            access.require(req.policy, req.res_type, "d")
            current = writer.read(req.res_type, req.res_id)
            if current is not None and not current.deleted:
                self._may(req, writer, "d")
        try:
            stored = writer.delete(req.res_type, req.res_id, self._if_match(req))
        except VersionConflict as exc:
            raise FhirError(412, "conflict", f"{req.res_type}/{req.res_id}: {exc}") from None
        minimal = prefer(req.headers).get("return") == "minimal"
        if stored is not None:
            self._record(writer, req, "D", "delete", req.res_id)
        if stored is None:
            message = f"{req.res_type}/{req.res_id} did not exist or was already deleted"
            return FhirResponse(204 if minimal else 200, None if minimal else info_outcome(message))
        message = f"deleted {req.res_type}/{req.res_id} (version {stored.version_id})"
        return FhirResponse(204 if minimal else 200, None if minimal else info_outcome(message),
                            {"ETag": stored.etag, "Last-Modified": stored.last_modified}, stored)

    # --------------------------------------------------------------- search and conditions

    def find(self, writer: Writer, res_type: str, condition: str | list[tuple[str, str]],
             base: str, limit: int) -> list[str]:
        """Ids of the resources matching a condition, inside the writer's transaction."""
        if self.engine is None:
            raise FhirError(501, "not-supported", "search is not available")
        query = parse_qsl(condition.lstrip("?"), keep_blank_values=True) \
            if isinstance(condition, str) else condition
        writer.flush()
        return [res_id for _, res_id in self.engine.matches(writer.conn, res_type, query, base,
                                                             limit)]

    def search(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        if self.engine is None:
            raise FhirError(501, "not-supported", "search is not available")
        from sonobridge.core.search.engine import Compartment

        query = list(req.query)
        compartment = since = None
        types = [req.res_type] if req.res_type else []
        path = req.res_type or ""
        if req.operation == "$everything":
            if req.res_type != "Patient":
                raise FhirError(400, "not-supported", "$everything is defined on Patient")
            self._must_exist(req, writer)
            compartment = Compartment("Patient", req.res_id or "")
            types, query, since = self._everything_params(query)
            path = f"Patient/{req.res_id}/$everything"
        elif req.compartment_type is not None:
            if req.res_type != "Patient":
                raise FhirError(400, "not-supported", "only the Patient compartment is supported")
            compartment = Compartment("Patient", req.res_id or "")
            path = f"Patient/{req.res_id}/{req.compartment_type}"
            if req.compartment_type != "*":
                check_type(req.compartment_type)
                types = [req.compartment_type]
            else:
                types, query = self._type_param(query, [])
        elif req.res_type is None:
            types, query = self._type_param(query, [])
        policy = req.policy
        if not policy.unrestricted:
            if req.operation == "$everything" or req.compartment_type is not None:
                access.require(policy, "Patient", "r")
            types = access.search_types(policy, types)
            compartment, extra = access.search_terms(policy, types, compartment)
            query += extra
        if writer is not None:
            writer.flush()
            return self._search(req, types, query, path, compartment, since, writer.conn)
        with self.store.reader.connect() as conn:
            return self._search(req, types, query, path, compartment, since, conn)

    def _search(self, req: FhirRequest, types: list[str], query: list[tuple[str, str]],
                path: str, compartment: Any, since: int | None, conn: Any) -> FhirResponse:
        assert self.engine is not None
        result = self.engine.search(
            types, query, base=req.base, headers=req.headers, link_path=path,
            compartment=compartment, conn=conn, since=since,
            visible=access.include_filter(self.engine, conn, req.policy, req.base))
        return FhirResponse(200, result.bundle, {"X-Search-Statements": str(result.statements)})

    def _must_exist(self, req: FhirRequest, writer: Writer | None) -> None:
        stored = (writer.read if writer else self.store.read)(req.res_type or "", req.res_id or "")
        if stored is None or stored.deleted:
            raise not_found(f"{req.res_type}/{req.res_id} is not known")

    @staticmethod
    def _type_param(query: list[tuple[str, str]], default: list[str]
                    ) -> tuple[list[str], list[tuple[str, str]]]:
        types = list(default)
        rest = []
        for name, value in query:
            if name == "_type":
                for res_type in value.split(","):
                    check_type(res_type.strip())
                    types.append(res_type.strip())
            else:
                rest.append((name, value))
        return types, rest

    def _everything_params(self, query: list[tuple[str, str]]
                           ) -> tuple[list[str], list[tuple[str, str]], int | None]:
        from sonobridge.core.search.dates import parse_period

        types, rest = self._type_param(query, [])
        since = None
        for name, value in rest:
            if name == "_since":
                since = parse_period(value, "_since")[0]
            elif name not in ("_count", "_page", "_summary", "_elements"):
                raise FhirError(400, "not-supported", f"$everything does not take {name}",
                                expression=[name])
        return types, rest, since

    def _one_target(self, req: FhirRequest, writer: Writer, what: str) -> list[str]:
        assert req.res_type is not None
        if not req.query:
            raise FhirError(400, "invalid", f"a conditional {what} needs search parameters")
        return self.find(writer, req.res_type, req.query, req.base, limit=2)

    def conditional_update(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        assert req.res_type is not None
        validate(req.body, req.res_type)
        return self._in_writer(writer, self._conditional_update, req)

    def _conditional_update(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        assert req.res_type is not None
        found = self._one_target(req, writer, "update")
        if len(found) > 1:
            raise FhirError(412, "duplicate", "the condition matches more than one resource")
        body_id = req.body.get("id")
        if found:
            if body_id is not None and body_id != found[0]:
                raise FhirError(400, "invalid", f"id {body_id!r} in the body is not the id of "
                                f"the matching resource", expression=[f"{req.res_type}.id"])
            target = found[0]
        else:
            target = body_id or new_id()
        updated = FhirRequest("PUT", req.res_type, target, headers=req.headers,
                              body={**req.body, "id": target}, base=req.base,
                              policy=req.policy, source=req.source)
        return self._update(updated, writer)

    def conditional_delete(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        return self._in_writer(writer, self._conditional_delete, req)

    def _conditional_delete(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        assert req.res_type is not None
        if not req.query:
            raise FhirError(400, "invalid", "a conditional delete needs search parameters")
        found = self.find(writer, req.res_type, req.query, req.base,
                          limit=CONDITIONAL_DELETE_MAX + 1)
        if len(found) > CONDITIONAL_DELETE_MAX:
            raise FhirError(412, "too-costly", f"the condition matches more than "
                            f"{CONDITIONAL_DELETE_MAX} resources; narrow it")
        for res_id in found:
            self._may(req, writer, "d", res_id)
            writer.delete(req.res_type, res_id)
            self._record(writer, req, "D", "delete", res_id)
        if prefer(req.headers).get("return") == "minimal":
            return FhirResponse(204)
        return FhirResponse(200, info_outcome(f"deleted {len(found)} {req.res_type} resource"
                                              f"{'' if len(found) == 1 else 's'}"))

    def conditional_patch(self, req: FhirRequest, writer: Writer | None = None) -> FhirResponse:
        return self._in_writer(writer, self._conditional_patch, req)

    def _conditional_patch(self, req: FhirRequest, writer: Writer) -> FhirResponse:
        found = self._one_target(req, writer, "patch")
        if len(found) > 1:
            raise FhirError(412, "duplicate", "the condition matches more than one resource")
        if not found:
            raise not_found("no resource matches the condition")
        target = FhirRequest("PATCH", req.res_type, found[0], headers=req.headers,
                             body=req.body, body_kind=req.body_kind, base=req.base,
                             policy=req.policy, source=req.source)
        return self._patch(target, writer)

    def write_response(self, req: FhirRequest, status: int, stored: StoredResource
                       ) -> FhirResponse:
        """ETag, Last-Modified, Location, and a body as ``Prefer: return=`` asks."""
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
