"""What the request's policy lets it do with FHIR resources.

The policy (``auth/policy.py``) says which scopes allow which interaction on which type, and
whether the access is confined to a patient's compartment or filtered by a query. This module
turns that into search-engine terms: constraints added to a search, and a membership test for
single resources (reads, writes) and for included ones. Every check is made against the
search index, inside the same transaction as the write it guards, so a write that would leave
the caller's compartment is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from sonobridge.core.errors import FhirError
from sonobridge.core.policy import Forbidden, Policy
from sonobridge.core.scopes import ResourceScope
from sonobridge.core.search.engine import Compartment, SearchEngine
from sonobridge.core.validation import known_types

_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def forbidden(message: str) -> FhirError:
    return FhirError(403, "forbidden", message,
                     headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


def require(policy: Policy, res_type: str, permission: str) -> list[ResourceScope]:
    try:
        return policy.require(res_type, permission)
    except Forbidden as exc:
        raise forbidden(str(exc)) from None


def _terms(policy: Policy, scopes: list[ResourceScope]
           ) -> tuple[Compartment | None, list[list[tuple[str, str]]]] | None:
    """(compartment, alternative filters) for a set of granting scopes; ``None`` means the
    access is unrestricted."""
    confined = all(s.context == "patient" for s in scopes)
    filters = [list(s.query) for s in scopes]
    if not confined and any(not f for f in filters):
        return None
    compartment = Compartment("Patient", policy.patient or "") if confined else None
    if any(not f for f in filters):
        filters = [[]]
    return compartment, filters


def visible(engine: SearchEngine, conn: Connection, policy: Policy, base: str,
            permission: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (type, id) pairs among ``keys`` the policy allows ``permission`` on."""
    keys = set(keys)
    if policy.unrestricted:
        return keys
    by_type: dict[str, list[str]] = {}
    for res_type, res_id in keys:
        by_type.setdefault(res_type, []).append(res_id)
    out: set[tuple[str, str]] = set()
    for res_type, ids in by_type.items():
        scopes = policy.grants(res_type, permission)
        if not scopes:
            continue
        terms = _terms(policy, scopes)
        if terms is None:
            out.update((res_type, i) for i in ids)
            continue
        compartment, filters = terms
        found: set[str] = set()
        for query in filters:
            left = [i for i in ids if i not in found]
            for start in range(0, len(left), 200):
                found |= engine.restricted(conn, res_type, left[start:start + 200],
                                           compartment, query, base)
        out.update((res_type, i) for i in found)
    return out


def check_one(engine: SearchEngine, conn: Connection, policy: Policy, base: str,
              permission: str, res_type: str, res_id: str) -> None:
    """403 unless the policy allows ``permission`` on this one resource (as indexed now)."""
    if policy.unrestricted:
        return
    require(policy, res_type, permission)
    if not visible(engine, conn, policy, base, permission, [(res_type, res_id)]):
        where = "the patient compartment" if policy.patient else "the scopes"
        raise forbidden(f"{res_type}/{res_id} is outside {where} this token allows "
                        f"({_WORDS[permission]})")


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


def search_terms(policy: Policy, types: list[str], compartment: Compartment | None
                 ) -> tuple[Compartment | None, list[tuple[str, str]]]:
    """The compartment and the extra parameters the policy adds to a search of ``types``.

    Alternative query-restricted scopes on one parameter combine into one OR (``a,b``); other
    combinations keep the first scope's filter, which is narrower than the grant, never wider.
    """
    if policy.unrestricted:
        return compartment, []
    confined = False
    extra: list[tuple[str, str]] = []
    for res_type in types or sorted(known_types()):
        scopes = policy.grants(res_type, "s")
        if not scopes:
            continue
        terms = _terms(policy, scopes)
        if terms is None:
            continue
        kept, filters = terms
        confined = confined or kept is not None
        if len(types) == 1 and filters and filters[0]:
            names = {name for f in filters for name, _ in f}
            if all(len(f) == 1 for f in filters) and len(names) == 1:
                extra = [(names.pop(), ",".join(f[0][1] for f in filters))]
            else:
                extra = list(filters[0])
    if confined:
        if compartment is not None and compartment.id != policy.patient:
            raise forbidden("this token is confined to another patient's compartment")
        compartment = Compartment("Patient", policy.patient or "")
    return compartment, extra


def include_filter(engine: SearchEngine, conn: Connection, policy: Policy, base: str) -> Any:
    """A ``visible`` callback for the search engine: included rows the caller may read."""
    if policy.unrestricted:
        return None

    def keep(rows: list[Any]) -> list[Any]:
        allowed = visible(engine, conn, policy, base, "r",
                          [(row.res_type, row.res_id) for row in rows])
        return [row for row in rows if (row.res_type, row.res_id) in allowed]

    return keep


def allowed_ids(engine: SearchEngine, conn: Connection, policy: Policy, base: str,
                permission: str, res_type: str) -> set[str] | None:
    """Every id of ``res_type`` the policy allows ``permission`` on, or ``None`` for "all"
    (DICOMweb: the studies a token may see are those whose ImagingStudy it may see)."""
    if policy.unrestricted:
        return None
    scopes = require(policy, res_type, permission)
    terms = _terms(policy, scopes)
    if terms is None:
        return None
    compartment, filters = terms
    found: set[str] = set()
    for query in filters:
        found |= engine.restricted(conn, res_type, None, compartment, query, base)
    return found
