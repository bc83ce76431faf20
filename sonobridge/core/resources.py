"""FHIR interactions for a caller: read, create, update, patch, delete, their conditional forms,
search and history. The one write path for FHIR resources, whoever sends them: the REST edge
and its bundles, HL7 v2 messages, MPPS, the DICOM archive's ImagingStudy, the sample data.

Every interaction is given a ``Caller`` (policy, base URL, address) and asks ``Access``
before it reads or writes; every write is validated, indexed, and told to the listeners of
``ResourceChanged`` inside its transaction (the audit trail, the results outbox). Writes run in
the caller's open ``Writer`` (a transaction bundle, an HL7 message) or in one of their own.

Nothing here knows HTTP: ``If-Match`` arrives as a version number, ``If-None-Exist`` as a
query, and the answer is the stored version (the FHIR edge adds the headers and status).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from sonobridge.core.access import Access, forbidden, require
from sonobridge.core.errors import CoreError, not_found
from sonobridge.core.events import Events, ResourceChanged, ResourceWriting
from sonobridge.core.patch import apply_fhirpath_patch, apply_json_patch
from sonobridge.core.policy import Caller
from sonobridge.core.references import literal_references
from sonobridge.core.search.dates import parse_period
from sonobridge.core.search.engine import Compartment, SearchEngine, SearchResult
from sonobridge.core.validation import check_type, is_valid_id, validate
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.resources import (
    ResourceStore,
    StoredResource,
    VersionConflict,
    Writer,
    new_id,
)

CONDITIONAL_DELETE_MAX = 100
T = TypeVar("T")
Condition = str | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Written:
    """The version a write left: ``created`` for a new resource (201), else 200."""

    stored: StoredResource
    created: bool


@dataclass(frozen=True, slots=True)
class Patch:
    """A patch document: a JSON Patch (``json-patch``) or a FHIRPath Patch Parameters
    resource (``fhirpath``)."""

    body: Any
    kind: str


@dataclass
class SearchSpec:
    """A search as asked: ``Type?params``, ``Patient/id/Type`` (a compartment), or
    ``Patient/id/$everything``."""

    res_type: str | None
    params: list[tuple[str, str]]
    patient: str | None = None  # the compartment's (or $everything's) patient
    compartment_type: str | None = None  # a type, or "*"
    everything: bool = False
    strict: bool = False  # Prefer: handling=strict (unknown parameters are errors)


def type_param(query: Sequence[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
    """``_type=A,B`` taken out of a query: (types, the rest)."""
    types: list[str] = []
    rest = []
    for name, value in query:
        if name == "_type":
            for res_type in value.split(","):
                check_type(res_type.strip())
                types.append(res_type.strip())
        else:
            rest.append((name, value))
    return types, rest


class Resources:
    def __init__(self, store: ResourceStore, engine: SearchEngine, access: Access,
                 events: Events, *, history_page_max: int = 1000) -> None:
        self.store = store
        self.engine = engine
        self.access = access
        self.events = events
        self.history_page_max = history_page_max

    # --------------------------------------------------------------- plumbing

    def _in_writer(self, writer: Writer | None, fn: Callable[[Writer], T]) -> T:
        if writer is not None:
            return fn(writer)
        with self.store.write() as own:
            return fn(own)

    def _may(self, caller: Caller, writer: Writer | None, permission: str, res_type: str,
             res_id: str) -> None:
        """403 unless the policy allows ``permission`` on this resource (type rights, then
        compartment and query filters, as the index stands in this transaction)."""
        if caller.policy.unrestricted:
            return
        require(caller.policy, res_type, permission)
        if writer is not None:
            writer.flush()
            self.access.check(writer.conn, caller, permission, res_type, res_id)
            return
        with self.store.reader.connect() as conn:
            self.access.check(conn, caller, permission, res_type, res_id)

    def _changed(self, writer: Writer, caller: Caller, action: str, interaction: str,
                 stored: StoredResource, resource: dict[str, Any] | None,
                 changed: bool = True) -> None:
        if self.events.wants(ResourceChanged):
            self.events.emit(ResourceChanged(writer, caller, action, interaction, stored,
                                             resource, changed))

    def _writing(self, writer: Writer, caller: Caller, interaction: str, res_type: str,
                 res_id: str | None, body: dict[str, Any]) -> None:
        """Tell the listeners of ``ResourceWriting`` (who may refuse) what is about to be
        written, with the current content when there is one."""
        if not self.events.wants(ResourceWriting):
            return
        previous = None
        if res_id is not None:
            current = writer.read(res_type, res_id)
            if current is not None and not current.deleted and current.content is not None:
                previous = json_loads(current.content)
        self.events.emit(ResourceWriting(writer, caller, interaction, res_type, res_id, body,
                                         previous))

    def _touches(self, caller: Caller, writer: Writer, res_type: str, permission: str,
                 body: Any, before: Any = None) -> None:
        """403 when a write points at (or, for ``before``, stops pointing at) a resource of
        another patient's record (``Access.references``)."""
        if caller.policy.unrestricted:
            return
        touched = literal_references(body, caller.base)
        if before is not None:
            touched |= literal_references(before, caller.base)
        writer.flush()
        self.access.references(writer.conn, caller, res_type, permission, touched)

    @staticmethod
    def _target(res_type: str, res_id: str | None = None) -> None:
        check_type(res_type)
        if res_id is not None and not is_valid_id(res_id):
            raise CoreError(400, "invalid", f"invalid resource id {res_id!r}: ids match "
                            "[A-Za-z0-9-.]{1,64}")

    @staticmethod
    def _append_only(res_type: str) -> None:
        if res_type == "AuditEvent":
            raise CoreError(405, "not-supported", "the audit trail is append-only: an "
                            "AuditEvent may be created (IHE RESTful ATNA), never changed")

    # --------------------------------------------------------------- reads

    def read(self, caller: Caller, res_type: str, res_id: str, writer: Writer | None = None
             ) -> StoredResource:
        """The current version; 404 unknown, 410 deleted (with its version headers)."""
        self._target(res_type, res_id)
        stored = writer.read(res_type, res_id) if writer is not None else \
            self.store.read(res_type, res_id)
        self._may(caller, writer, "r", res_type, res_id)
        if stored is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if stored.deleted:
            raise CoreError(410, "deleted", f"{res_type}/{res_id} was deleted",
                            headers={"ETag": stored.etag,
                                     "Last-Modified": stored.last_modified})
        return stored

    def vread(self, caller: Caller, res_type: str, res_id: str, version_id: str,
              writer: Writer | None = None) -> StoredResource:
        self._target(res_type, res_id)
        if not version_id.isdecimal() or len(version_id) > 18:
            raise CoreError(400, "invalid", f"invalid version id {version_id!r}")
        stored = self.store.vread(res_type, res_id, int(version_id))
        self._may(caller, writer, "r", res_type, res_id)
        if stored is not None and not self.access.version_visible(caller, res_type, res_id,
                                                                  stored.content):
            raise forbidden(f"version {version_id} of {res_type}/{res_id} is outside the "
                            "patient compartment this token allows (read)")
        if stored is None:
            raise not_found(f"{res_type}/{res_id} has no version {version_id}")
        if stored.deleted:
            raise CoreError(410, "deleted", f"version {stored.version_id} of "
                            f"{res_type}/{res_id} is a deletion",
                            headers={"ETag": stored.etag,
                                     "Last-Modified": stored.last_modified})
        return stored

    def exists(self, res_type: str, res_id: str, writer: Writer | None = None) -> bool:
        """Whether a resource is there and not deleted (no policy: for the core's own use)."""
        if not is_valid_id(res_id):
            return False
        stored = writer.read(res_type, res_id) if writer is not None else \
            self.store.read(res_type, res_id)
        return stored is not None and not stored.deleted

    def current(self, writer: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
        """The current content as a dict, without ``meta`` (for the core's read-modify-write
        flows: HL7 merges, MPPS progress); ``None`` when missing or deleted."""
        stored = writer.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return None
        body: dict[str, Any] = json_loads(stored.content)
        body.pop("meta", None)
        return body

    # --------------------------------------------------------------- writes

    def create(self, caller: Caller, res_type: str, body: Any, *,
               if_none_exist: Condition | None = None, assigned_id: str | None = None,
               writer: Writer | None = None) -> Written:
        """Create (the server gives the id; ``assigned_id`` is a transaction's or the core's
        own choice). With ``if_none_exist``, a match is returned instead (not created)."""
        self._target(res_type)
        require(caller.policy, res_type, "c")
        validate(body, res_type)

        def run(writer: Writer) -> Written:
            if if_none_exist:
                found = self.find(writer, res_type, if_none_exist, caller.base, limit=2,
                                  caller=caller)
                if len(found) > 1:
                    raise CoreError(412, "duplicate", f"If-None-Exist: {if_none_exist!r} "
                                    f"matches more than one {res_type}")
                if found:  # already there: nothing is created
                    self._may(caller, writer, "r", res_type, found[0])
                    stored = writer.read(res_type, found[0])
                    assert stored is not None
                    return Written(stored, created=False)
            self._writing(writer, caller, "create", res_type, assigned_id, body)
            stored = writer.create(res_type, body, assigned_id)
            self._may(caller, writer, "c", res_type, stored.id)
            self._touches(caller, writer, res_type, "c", body)
            self._changed(writer, caller, "C", "create", stored, body)
            return Written(stored, created=True)

        return self._in_writer(writer, run)

    def update(self, caller: Caller, res_type: str, res_id: str, body: Any, *,
               if_match: int | None = None, writer: Writer | None = None) -> Written:
        """Update, or create with the caller's id. Identical content makes no new version."""
        self._target(res_type, res_id)
        validate(body, res_type)
        body_id = body.get("id")
        if body_id is None:
            raise CoreError(400, "required", "the resource must carry its id on update",
                            expression=[f"{res_type}.id"])
        if body_id != res_id:
            raise CoreError(400, "invalid", f"id {body_id!r} in the body does not match "
                            f"{res_id!r} in the URL", expression=[f"{res_type}.id"])
        return self._in_writer(writer, lambda w: self._update(caller, w, res_type, res_id,
                                                              body, if_match))

    def _update(self, caller: Caller, writer: Writer, res_type: str, res_id: str,
                body: dict[str, Any], if_match: int | None, method: str = "PUT") -> Written:
        if res_type == "AuditEvent" and writer.read("AuditEvent", res_id) is not None:
            self._append_only(res_type)
        before: Any = None
        if not caller.policy.unrestricted:
            require(caller.policy, res_type, "u")
            current = writer.read(res_type, res_id)
            if current is not None and not current.deleted:
                self._may(caller, writer, "u", res_type, res_id)  # the resource as it is now
                before = json_loads(current.content) if current.content else None
            else:
                require(caller.policy, res_type, "c")  # update as create
        self._writing(writer, caller, "patch" if method == "PATCH" else "update", res_type,
                      res_id, body)
        try:
            result = writer.update(res_type, res_id, body, if_match, method=method)
        except VersionConflict as exc:
            raise CoreError(412, "conflict", f"{res_type}/{res_id}: {exc}") from None
        self._may(caller, writer, "u", res_type, res_id)  # ...and as it would be
        self._touches(caller, writer, res_type, "u", body, before)
        # Told even when nothing changed: the audit trail records the interaction.
        self._changed(writer, caller, "C" if result.created else "U",
                      "patch" if method == "PATCH" else "update", result.stored, body,
                      result.changed)
        return Written(result.stored, result.created)

    def patch(self, caller: Caller, res_type: str, res_id: str, patch: Patch, *,
              if_match: int | None = None, writer: Writer | None = None) -> Written:
        self._target(res_type, res_id)
        self._append_only(res_type)
        return self._in_writer(writer, lambda w: self._patch(caller, w, res_type, res_id,
                                                             patch, if_match))

    def _patch(self, caller: Caller, writer: Writer, res_type: str, res_id: str,
               patch: Patch, if_match: int | None) -> Written:
        current = writer.read(res_type, res_id)
        if current is None or current.content is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        resource = json_loads(current.content)
        if patch.kind == "json-patch":
            patched = apply_json_patch(resource, patch.body)
        else:
            patched = apply_fhirpath_patch(resource, patch.body)
        validate(patched, res_type, status=422)
        if patched.get("id") != res_id:
            raise CoreError(422, "processing", "a patch may not change the resource id",
                            expression=[f"{res_type}.id"])
        return self._update(caller, writer, res_type, res_id, patched, if_match,
                            method="PATCH")

    def delete(self, caller: Caller, res_type: str, res_id: str, *,
               if_match: int | None = None, writer: Writer | None = None
               ) -> StoredResource | None:
        """Delete (a version in the history); ``None`` when nothing was there."""
        self._target(res_type, res_id)
        self._append_only(res_type)

        def run(writer: Writer) -> StoredResource | None:
            if not caller.policy.unrestricted:
                require(caller.policy, res_type, "d")
                current = writer.read(res_type, res_id)
                if current is not None and not current.deleted:
                    self._may(caller, writer, "d", res_type, res_id)
            try:
                stored = writer.delete(res_type, res_id, if_match)
            except VersionConflict as exc:
                raise CoreError(412, "conflict", f"{res_type}/{res_id}: {exc}") from None
            if stored is not None:
                self._changed(writer, caller, "D", "delete", stored, None)
            return stored

        return self._in_writer(writer, run)

    # --------------------------------------------------------------- conditional writes

    def _one_target(self, caller: Caller, writer: Writer, res_type: str,
                    condition: Condition, what: str) -> list[str]:
        if not condition:
            raise CoreError(400, "invalid", f"a conditional {what} needs search parameters")
        return self.find(writer, res_type, condition, caller.base, limit=2, caller=caller)

    def conditional_update(self, caller: Caller, res_type: str, condition: Condition,
                           body: Any, *, if_match: int | None = None,
                           writer: Writer | None = None) -> Written:
        self._target(res_type)
        validate(body, res_type)

        def run(writer: Writer) -> Written:
            found = self._one_target(caller, writer, res_type, condition, "update")
            if len(found) > 1:
                raise CoreError(412, "duplicate",
                                "the condition matches more than one resource")
            body_id = body.get("id")
            if found:
                if body_id is not None and body_id != found[0]:
                    raise CoreError(400, "invalid", f"id {body_id!r} in the body is not the "
                                    "id of the matching resource",
                                    expression=[f"{res_type}.id"])
                target = found[0]
            else:
                target = body_id or new_id()
            return self._update(caller, writer, res_type, target, {**body, "id": target},
                                if_match)

        return self._in_writer(writer, run)

    def conditional_delete(self, caller: Caller, res_type: str, condition: Condition,
                           writer: Writer | None = None) -> int:
        """Delete every match (at most ``CONDITIONAL_DELETE_MAX``); returns how many."""
        self._target(res_type)
        self._append_only(res_type)
        if not condition:
            raise CoreError(400, "invalid", "a conditional delete needs search parameters")

        def run(writer: Writer) -> int:
            found = self.find(writer, res_type, condition, caller.base,
                              limit=CONDITIONAL_DELETE_MAX + 1, caller=caller)
            if len(found) > CONDITIONAL_DELETE_MAX:
                raise CoreError(412, "too-costly", f"the condition matches more than "
                                f"{CONDITIONAL_DELETE_MAX} resources; narrow it")
            for res_id in found:
                self._may(caller, writer, "d", res_type, res_id)
                stored = writer.delete(res_type, res_id)
                if stored is not None:
                    self._changed(writer, caller, "D", "delete", stored, None)
            return len(found)

        return self._in_writer(writer, run)

    def conditional_patch(self, caller: Caller, res_type: str, condition: Condition,
                          patch: Patch, *, if_match: int | None = None,
                          writer: Writer | None = None) -> Written:
        self._target(res_type)
        self._append_only(res_type)

        def run(writer: Writer) -> Written:
            found = self._one_target(caller, writer, res_type, condition, "patch")
            if len(found) > 1:
                raise CoreError(412, "duplicate",
                                "the condition matches more than one resource")
            if not found:
                raise not_found("no resource matches the condition")
            return self._patch(caller, writer, res_type, found[0], patch, if_match)

        return self._in_writer(writer, run)

    # --------------------------------------------------------------- search and conditions

    def find(self, writer: Writer, res_type: str, condition: Condition, base: str,
             limit: int, caller: Caller | None = None) -> list[str]:
        """Ids of the resources matching a condition, inside the writer's transaction. With
        a ``caller``, only among those it may read: a condition that names someone else's
        resource answers exactly as one that names nothing (no existence oracle)."""
        query = parse_qsl(condition.lstrip("?"), keep_blank_values=True) \
            if isinstance(condition, str) else list(condition)
        writer.flush()
        grants = self.access.grants(caller, "r") if caller is not None else None
        return [res_id for _, res_id in self.engine.matches(writer.conn, res_type, query, base,
                                                             limit, grants)]

    def identifier_matches(self, writer: Writer, res_type: str,
                           pairs: Sequence[tuple[str, str]]
                           ) -> dict[tuple[str, str], list[str]]:
        """(system, value) -> ids of current ``res_type`` resources carrying it (resources
        written earlier in this transaction included)."""
        writer.flush()
        return self.engine.identifier_matches(writer.conn, res_type, list(pairs))

    def search(self, caller: Caller, spec: SearchSpec, writer: Writer | None = None
               ) -> SearchResult:
        query = list(spec.params)
        compartment: Compartment | None = None
        since = None
        types = [spec.res_type] if spec.res_type else []
        path = spec.res_type or ""
        if spec.res_type is not None:
            check_type(spec.res_type)
        if spec.everything:
            if spec.res_type != "Patient":
                raise CoreError(400, "not-supported", "$everything is defined on Patient")
            patient = spec.patient or ""
            compartment = Compartment("Patient", patient)
            types, query, since = self._everything_params(query)
            path = f"Patient/{patient}/$everything"
        elif spec.compartment_type is not None:
            if spec.res_type != "Patient":
                raise CoreError(400, "not-supported",
                                "only the Patient compartment is supported")
            compartment = Compartment("Patient", spec.patient or "")
            path = f"Patient/{spec.patient}/{spec.compartment_type}"
            if spec.compartment_type != "*":
                check_type(spec.compartment_type)
                types = [spec.compartment_type]
            else:
                types, query = type_param(query)
        elif spec.res_type is None:
            types, query = type_param(query)
        policy = caller.policy
        if not policy.unrestricted:
            if spec.everything or spec.compartment_type is not None:
                require(policy, "Patient", "r")
            types = self.access.search_types(policy, types)
            compartment, extra = self.access.search_terms(policy, types, compartment)
            query += extra
        # Existence only after the policy: a token confined to another patient is told the
        # same for a patient that exists and one that does not.
        if spec.everything and not self.exists("Patient", spec.patient or "", writer):
            raise not_found(f"Patient/{spec.patient} is not known")
        if writer is not None:
            writer.flush()
            return self._search(caller, spec, types, query, path, compartment, since,
                                writer.conn)
        with self.store.reader.connect() as conn:
            return self._search(caller, spec, types, query, path, compartment, since, conn)

    def _search(self, caller: Caller, spec: SearchSpec, types: list[str],
                query: list[tuple[str, str]], path: str, compartment: Compartment | None,
                since: int | None, conn: Connection) -> SearchResult:
        return self.engine.search(
            types, query, base=caller.base, strict=spec.strict, link_path=path,
            compartment=compartment, conn=conn, since=since,
            visible=self.access.include_filter(conn, caller),
            grants=self.access.grants(caller, "s"))

    @staticmethod
    def _everything_params(query: list[tuple[str, str]]
                           ) -> tuple[list[str], list[tuple[str, str]], int | None]:
        types, rest = type_param(query)
        since = None
        for name, value in rest:
            if name == "_since":
                since = parse_period(value, "_since")[0]
            elif name not in ("_count", "_page", "_summary", "_elements"):
                raise CoreError(400, "not-supported", f"$everything does not take {name}",
                                expression=[name])
        return types, rest, since
