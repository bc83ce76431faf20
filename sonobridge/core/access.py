"""What a caller's policy lets it do: the one place every edge asks.

The policy (``core/policy.py``) says which scopes allow which interaction on which type, and
whether the access is confined to a patient's compartment or filtered by a query. ``Access``
turns that into search-engine terms: constraints added to a search, and a membership test for
single resources (reads, writes) and for included ones. Every check is made against the
search index, inside the same transaction as the write it guards, so a write that would leave
the caller's compartment is rolled back.

DICOM follows FHIR (the SMART imaging-access pattern): a study is readable exactly when its
ImagingStudy is, so one token works for both APIs. DIMSE callers are asked which services
their AE title was given.

A teaching-only role (the trainee, ``core/roles.py``) is narrowed here for every read, search,
include, history version and DICOM retrieval: on the types that hold patient data it sees only
resources labelled as de-identified teaching material, or its own training records. The rule is
one more term on each of its grants, so every path that asks ``grants_for`` applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from sqlalchemy import Connection

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Forbidden, Policy
from sonobridge.core.roles import TEACHING_LABEL, TRAINING_RECORDS, teaching_only
from sonobridge.core.scopes import ResourceScope
from sonobridge.core.search.engine import (
    Compartment,
    Grant,
    Grants,
    SearchEngine,
    compartment_params,
)
from sonobridge.core.search.paging import ResourceRow
from sonobridge.core.validation import known_types
from sonobridge.store.resources import ResourceStore

_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Included rows -> those the caller may read (the search engine's ``visible`` callback).
RowFilter = Callable[[list[ResourceRow]], list[ResourceRow]]


def forbidden(message: str) -> CoreError:
    return CoreError(403, "forbidden", message,
                     headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


def require(policy: Policy, res_type: str, permission: str) -> list[ResourceScope]:
    """The scopes that grant ``permission`` on ``res_type``; 403 when none does."""
    try:
        return policy.require(res_type, permission)
    except Forbidden as exc:
        raise forbidden(str(exc)) from None


def may_use(policy: Policy, service: str) -> bool:
    """Whether a DIMSE caller may use ``service`` (echo, store, find, move, get, worklist,
    mpps, commit: ``SONOBRIDGE_DICOM_PEERS`` rights)."""
    return service in policy.services


@cache
def patient_data_types() -> frozenset[str]:
    """Types that can hold identified patient data: every type of the Patient compartment,
    Patient itself, and Binary (a report's PDF, a recording)."""
    return frozenset(compartment_params()) | {"Patient", "Binary"}


def teaching_terms(policy: Policy, res_type: str, permission: str
                   ) -> list[tuple[tuple[str, str], ...]] | None:
    """The trainee rule as search terms: ``None`` when it does not apply, else the
    alternatives one of which a resource must also match (the teaching label; the caller's own
    training records when the token names its Practitioner). Creating is not narrowed (a new
    resource shows nothing that was there); reading, searching, updating and deleting are."""
    if (policy.unrestricted or not teaching_only(policy.role) or permission == "c"
            or res_type not in patient_data_types()):
        return None
    alternatives: list[tuple[tuple[str, str], ...]] = [
        (("_security", "|".join(TEACHING_LABEL)),)]
    own = _practitioner(policy)
    if own and res_type in TRAINING_RECORDS:
        alternatives.append(((TRAINING_RECORDS[res_type][0], own),))
    return alternatives


def _practitioner(policy: Policy) -> str | None:
    """``Practitioner/ID`` from the token's fhirUser (relative or absolute), else ``None``."""
    parts = (policy.fhir_user or "").rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Practitioner" and parts[-1]:
        return f"Practitioner/{parts[-1]}"
    return None


def teaching_content_allowed(policy: Policy, res_type: str, resource: dict[str, Any]) -> bool:
    """The trainee rule judged on one stored version's own content (history)."""
    if teaching_terms(policy, res_type, "r") is None:
        return True
    security = (resource.get("meta") or {}).get("security") or []
    if any(isinstance(s, dict) and (s.get("system"), s.get("code")) == TEACHING_LABEL
           for s in security):
        return True
    own = _practitioner(policy)
    if own is None or res_type not in TRAINING_RECORDS:
        return False
    values: list[Any] = [resource]
    for step in TRAINING_RECORDS[res_type][1]:
        nxt: list[Any] = []
        for value in values:
            found = value.get(step) if isinstance(value, dict) else None
            nxt.extend(found if isinstance(found, list) else [found])
        values = nxt
    return any(isinstance(v, dict) and v.get("reference") == own for v in values)


def grants_for(policy: Policy, res_type: str, permission: str) -> list[Grant] | None:
    """How the policy lets ``permission`` on ``res_type``: ``None`` when on every resource of
    the type, else each granting scope as a ``Grant`` (its patient's compartment for a
    ``patient/`` scope, its query for a query-restricted scope); an empty list when none
    grants it. Alternatives are kept apart: a patient scope's filter never widens to another
    scope's patients, nor the reverse."""
    if policy.unrestricted:
        return None
    scopes = policy.grants(res_type, permission)
    narrow = teaching_terms(policy, res_type, permission)
    found: list[Grant] = []
    for scope in scopes:
        compartment = Compartment("Patient", policy.patient or "") \
            if scope.context == "patient" else None
        if narrow is None and compartment is None and not scope.query:
            return None  # one unrestricted grant is enough
        for extra in narrow if narrow is not None else [()]:
            grant = Grant(compartment, scope.query + extra)
            if grant not in found:
                found.append(grant)
    return found


class Access:
    """Decisions that need the index: built once with the search engine."""

    def __init__(self, engine: SearchEngine, store: ResourceStore) -> None:
        self.engine = engine
        self.store = store

    def grants(self, caller: Caller, permission: str) -> Grants | None:
        """The caller's grants per type, for the search engine (``None``: unrestricted)."""
        policy = caller.policy
        if policy.unrestricted:
            return None
        cache: dict[str, list[Grant] | None] = {}

        def of(res_type: str) -> list[Grant] | None:
            if res_type not in cache:
                cache[res_type] = grants_for(policy, res_type, permission)
            return cache[res_type]

        return of

    def visible(self, conn: Connection, caller: Caller, permission: str,
                keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (type, id) pairs among ``keys`` the policy allows ``permission`` on."""
        policy = caller.policy
        keys = set(keys)
        if policy.unrestricted:
            return keys
        by_type: dict[str, list[str]] = {}
        for res_type, res_id in keys:
            by_type.setdefault(res_type, []).append(res_id)
        out: set[tuple[str, str]] = set()
        for res_type, ids in by_type.items():
            found = grants_for(policy, res_type, permission)
            if found is None:
                out.update((res_type, i) for i in ids)
                continue
            for start in range(0, len(ids), 200):
                seen = self.engine.visible_ids(conn, res_type, ids[start:start + 200], found,
                                               caller.base)
                out.update((res_type, i) for i in seen)
        return out

    def check(self, conn: Connection, caller: Caller, permission: str, res_type: str,
              res_id: str) -> None:
        """403 unless the policy allows ``permission`` on this one resource (as indexed)."""
        policy = caller.policy
        if policy.unrestricted:
            return
        require(policy, res_type, permission)
        if not self.visible(conn, caller, permission, [(res_type, res_id)]):
            where = "the patient compartment" if policy.patient else "the scopes"
            raise forbidden(f"{res_type}/{res_id} is outside {where} this token allows "
                            f"({_WORDS[permission]})")

    def references(self, conn: Connection, caller: Caller, res_type: str, permission: str,
                   references: set[tuple[str, str]]) -> None:
        """403 unless a write confined to a patient's compartment (every scope that lets it
        write ``res_type`` is a ``patient/`` scope) points only inside that compartment, at
        resources of compartment types (and, for an update, pointed only there before): a
        patient-A token may not write into, or out of, patient B's record. References to
        resources outside compartments (practitioners, organisations, devices) are not the
        compartment's to bound."""
        policy = caller.policy
        if policy.unrestricted or not references or not policy.patient:
            return
        scopes = policy.grants(res_type, permission)
        if not scopes or any(s.context != "patient" for s in scopes):
            return
        kept = {(t, i) for t, i in references
                if t == "Patient" or t in self.engine.compartment_types()}
        own = Compartment("Patient", policy.patient)
        inside = {(t, i) for t, i in kept if t == "Patient" and i == policy.patient}
        by_type: dict[str, list[str]] = {}
        for t, i in kept - inside:
            if t != "Patient":
                by_type.setdefault(t, []).append(i)
        for t, ids in by_type.items():
            for start in range(0, len(ids), 200):
                seen = self.engine.visible_ids(conn, t, ids[start:start + 200], [Grant(own)],
                                               caller.base)
                inside.update((t, i) for i in seen)
        outside = kept - inside
        if outside:
            names = ", ".join(f"{t}/{i}" for t, i in sorted(outside)[:3])
            raise forbidden(f"the write touches {names}, outside the patient compartment "
                            "this token is confined to")

    def version_visible(self, caller: Caller, res_type: str, res_id: str,
                        content: bytes | None) -> bool:
        """Whether one stored version is inside the caller's compartment, judged by its own
        content (a resource moved from patient B to A keeps B's versions B's)."""
        policy = caller.policy
        found = grants_for(policy, res_type, "r")
        if found is None:
            return True
        if content is None:
            return any(g.compartment is None for g in found)
        from sonobridge import jsonio

        resource = jsonio.loads(content)
        if not teaching_content_allowed(policy, res_type, resource):
            return False
        members = self.engine.compartment_members(res_type, res_id, resource)
        return any(g.compartment is None or g.compartment in members for g in found)

    @staticmethod
    def search_types(policy: Policy, types: list[str]) -> list[str]:
        """The types a search may cover: the asked ones (each needs search rights), or for a
        search across all types, every type the policy can search."""
        if policy.unrestricted:
            return types
        if types:
            for res_type in types:
                require(policy, res_type, "s")
            return types
        allowed = sorted(t for t in known_types() if policy.grants(t, "s"))
        if not allowed:
            raise forbidden("the token's scopes allow no search")
        if len(allowed) == len(known_types()):
            return []
        return allowed

    @staticmethod
    def search_terms(policy: Policy, types: list[str], compartment: Compartment | None
                     ) -> tuple[Compartment | None, list[tuple[str, str]]]:
        """The compartment a search of ``types`` is confined to when every scope that lets
        it search them is a ``patient/`` scope (it then drives the query); 403 when the
        search names another patient's compartment. The scopes' queries, and mixed grants,
        are applied exactly by ``grants`` (the second value is kept empty for callers)."""
        if policy.unrestricted:
            return compartment, []
        confined = True
        for res_type in types or sorted(known_types()):
            scopes = policy.grants(res_type, "s")
            if scopes and any(s.context != "patient" for s in scopes):
                confined = False
        if confined and policy.patient:
            if compartment is not None and compartment.id != policy.patient:
                raise forbidden("this token is confined to another patient's compartment")
            compartment = Compartment("Patient", policy.patient)
        return compartment, []

    def include_filter(self, conn: Connection, caller: Caller) -> RowFilter | None:
        """A ``visible`` callback for the search engine: included rows the caller may read."""
        if caller.policy.unrestricted:
            return None

        def keep(rows: list[ResourceRow]) -> list[ResourceRow]:
            allowed = self.visible(conn, caller, "r",
                                   [(row.res_type, row.res_id) for row in rows])
            return [row for row in rows if (row.res_type, row.res_id) in allowed]

        return keep

    def allowed_ids(self, conn: Connection, caller: Caller, permission: str, res_type: str
                    ) -> set[str] | None:
        """Every id of ``res_type`` the policy allows ``permission`` on, or ``None`` for
        "all"."""
        policy = caller.policy
        if policy.unrestricted:
            return None
        require(policy, res_type, permission)
        found = grants_for(policy, res_type, permission)
        if found is None:
            return None
        return self.engine.visible_ids(conn, res_type, None, found, caller.base)

    def studies(self, caller: Caller, permission: str, study: str | None = None
                ) -> set[str] | None:
        """The DICOM studies a caller may reach: ``None`` for all, else the Study Instance
        UIDs (those whose ImagingStudy it may read or search); 403 when it may reach none of
        what it asks. Storing needs create rights on ImagingStudy without a patient or query
        restriction (a new study has no compartment to check against yet)."""
        policy = caller.policy
        if policy.unrestricted:
            return None
        try:
            if permission == "c":
                require(policy, "ImagingStudy", "c")
                if grants_for(policy, "ImagingStudy", "c") is not None:
                    raise forbidden("storing needs user/ or system/ create rights on "
                                    "ImagingStudy without a patient or query restriction")
                return None
            with self.store.reader.connect() as conn:
                if study is not None:
                    self.check(conn, caller, permission, "ImagingStudy", study)
                    return None
                return self.allowed_ids(conn, caller, permission, "ImagingStudy")
        except CoreError as exc:
            raise forbidden(str(exc).replace("ImagingStudy/", "study ")) from None

    @staticmethod
    def every_study(policy: Policy) -> bool:
        """Whether the caller may read and search every ImagingStudy (no patient or query
        restriction): what the PACS proxy needs, since a remote study has no ImagingStudy
        here to check against before it is fetched."""
        if policy.unrestricted:
            return True
        for permission in ("r", "s"):
            if teaching_terms(policy, "ImagingStudy", permission) is not None:
                return False  # a remote study carries no teaching label to check
            scopes = policy.grants("ImagingStudy", permission)
            if not any(s.context != "patient" and not s.query for s in scopes):
                return False
        return True

    @staticmethod
    def may_reindex(policy: Policy) -> bool:
        return policy.unrestricted or policy.role == "system-admin"
