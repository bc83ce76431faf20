"""Running a search: one statement for the page, one per include, paging by keyset.

Pages are addressed by the sort keys of the last (or first) row shown, not by an offset: a next
link stays correct while resources are written, and page N costs what page 1 costs. ``_total``
is counted once, on the first page, and carried in the page links. Includes are fetched with a
bounded number of statements whatever the page size, and never cut silently: past the limit the
bundle says so in an OperationOutcome entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Select,
    and_,
    bindparam,
    false,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.selectable import NamedFromClause

from sonobridge import jsonio
from sonobridge.core.definitions import load
from sonobridge.core.errors import CoreError, Issue, operation_outcome
from sonobridge.core.search.paging import SELECTIVE, Pager, Plan, ResourceRow, Run
from sonobridge.core.search.params import Include, QueryParser, SearchQuery
from sonobridge.core.search.registry import Registry
from sonobridge.core.search.sql import Condition, SqlContext, build_condition
from sonobridge.core.search.summary import summarize
from sonobridge.core.validation import known_types
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import INDEX_TABLES, idx_reference, idx_token
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

MAX_ITERATE = 5
R_ALIAS = R.alias("r")
_T = idx_token


def _by_identifier(pairs: int) -> Select[str, str, str]:
    """Current resources of a type carrying any of ``pairs`` system|value identifiers, with
    the pair each matched. Each OR term names the whole token index key (type, param, code,
    system): SQLite answers an OR from an index only when every term could use it alone,
    one lookup per pair (with type and param outside the OR it scanned the type's every
    identifier)."""
    matches = [and_(_T.c.res_type == bindparam("t"), _T.c.param == "identifier",
                    _T.c.code == bindparam(f"c{n}"), _T.c.system == bindparam(f"s{n}"))
               for n in range(pairs)]
    return select(R.c.res_id, _T.c.system, _T.c.code).select_from(
        _T.join(R, R.c.rid == _T.c.rid)).where(or_(*matches), R.c.deleted.is_(False))


_BY_IDENTIFIER = {n: _by_identifier(n) for n in range(1, 9)}
# Filters included rows down to those the caller may see (see ``fhir/access.py``).
Visible = Callable[[list[ResourceRow]], list[ResourceRow]]
_STR_MAX, _STR_MIN = "\U0010ffff", ""
_NUM_MAX, _NUM_MIN = 1e308, -1e308


@dataclass(frozen=True)
class Compartment:
    """``Patient/123/…``: restrict to resources in that patient's compartment."""

    kind: str
    id: str


@dataclass(frozen=True)
class Grant:
    """One way a caller may see resources of a type: inside a patient's compartment (or
    anywhere), and matching a query (or not): one SMART scope, in search terms."""

    compartment: Compartment | None
    query: tuple[tuple[str, str], ...] = ()


# A caller's grants per resource type: ``None`` when it may see every resource of the type,
# else the alternatives (an empty list: none of them).
Grants = Callable[[str], "list[Grant] | None"]


@dataclass
class SearchResult:
    bundle: dict[str, Any]
    statements: int


def compartment_params() -> dict[str, list[str]]:
    definition = load("compartmentdefinition-patient.json")
    return {entry["code"]: entry.get("param", []) for entry in definition["resource"]
            if entry.get("param")}


class SearchEngine:
    def __init__(self, store: ResourceStore, registry: Registry, *, default_count: int = 20,
                 max_count: int = 1000, max_includes: int = 1000) -> None:
        self.store = store
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.max_includes = max_includes
        self.selective = SELECTIVE
        self._compartment = compartment_params()

    # ----------------------------------------------------------------------------- entry points

    def parser(self, strict: bool) -> QueryParser:
        return QueryParser(self.registry, default_count=self.default_count,
                           max_count=self.max_count, strict=strict)

    def context(self, base: str, conn: Connection, grants: Grants | None = None
                ) -> SqlContext:
        restrict = None
        if grants is not None:
            def restrict(res_type: str, alias: NamedFromClause, ctx: SqlContext
                         ) -> ColumnElement[bool] | None:
                found = grants(res_type)
                return None if found is None else self.grant_condition(found, [res_type],
                                                                       alias, ctx)

        return SqlContext(base=base, valueset=lambda url: self._valueset(conn, url),
                          component=self.registry.component, restrict=restrict,
                          leader=self.registry.composite_leader)

    def grant_condition(self, grants: Sequence[Grant], types: list[str], r: NamedFromClause,
                        ctx: SqlContext) -> ColumnElement[bool]:
        """Rows of ``types`` that any of the grants lets the caller see."""
        if not grants:
            return false()
        alternatives = []
        for grant in grants:
            parts: list[ColumnElement[bool]] = []
            if grant.compartment is not None:
                parts.append(self._compartment_condition(grant.compartment, types, r, ctx))
            if grant.query:
                sq = self.parser(strict=True).parse(types, list(grant.query))
                sql_type = types[0] if len(types) == 1 else None
                parts += [build_condition(c, sql_type, r, ctx).as_exists(r)
                          for c in sq.clauses]
            alternatives.append(and_(*parts) if parts else true())
        return or_(*alternatives)

    def _visible_rows(self, grants: Grants, types: list[str], r: NamedFromClause,
                      ctx: SqlContext) -> ColumnElement[bool] | None:
        """The caller's restriction on the searched rows: types with the same grants share
        one condition (``patient/*.rs``: one compartment test for every type)."""
        groups: dict[tuple[Grant, ...], list[str]] = {}
        free: list[str] = []
        for res_type in types:
            found = grants(res_type)
            if found is None:
                free.append(res_type)
            else:
                groups.setdefault(tuple(found), []).append(res_type)
        if not groups:
            return None
        plain = SqlContext(ctx.base, ctx.valueset, ctx.component, ctx.now_us, ctx.aliases,
                           leader=ctx.leader)
        branches: list[ColumnElement[bool]] = []
        if free:
            branches.append(r.c.res_type.in_(free))
        for alternatives, members in groups.items():
            branches.append(and_(r.c.res_type.in_(members),
                                 self.grant_condition(alternatives, members, r, plain)))
        return or_(*branches)

    def search(self, res_types: list[str], query: Sequence[tuple[str, str]], *, base: str,
               strict: bool = False, link_path: str,
               compartment: Compartment | None = None, conn: Connection | None = None,
               since: int | None = None, visible: Visible | None = None,
               grants: Grants | None = None) -> SearchResult:
        """Run a search. ``grants`` (from the access policy) bound every resource the search
        looks at: the matches, and what chains, ``_has`` and ``_list`` evaluate; ``visible``
        drops included resources the caller may not see, before they are followed."""
        sq = self.parser(strict).parse(res_types or ["Resource"], list(query),
                                       passthrough=("_since",) if since is not None else ())
        sq.res_types = res_types
        if conn is not None:
            return self._run(conn, sq, base, link_path, compartment, since, visible, grants)
        with self.store.reader.connect() as own:
            return self._run(own, sq, base, link_path, compartment, since, visible, grants)

    def matches(self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]],
                base: str, limit: int, grants: Grants | None = None
                ) -> list[tuple[int, str]]:
        """(rid, id) of resources matching a condition (conditional interactions): strict.
        With ``grants``, only among what the caller may see: a condition that names someone
        else's resource answers as one that names nothing."""
        sq = self.parser(strict=True).parse([res_type], list(query))
        if not sq.clauses:
            raise CoreError(400, "invalid", "a conditional request needs search criteria")
        r = R_ALIAS
        plan = self._plan(lambda stmt: conn.execute(stmt), sq, r,
                          self.context(base, conn, grants), None, None, grants)
        rows = conn.execute(select(r.c.rid, r.c.res_id).where(plan.where).order_by(r.c.rid)
                            .limit(limit)).all()
        return [(row.rid, row.res_id) for row in rows]

    # ----------------------------------------------------------------------------- planning

    def _plan(self, run: Run, sq: SearchQuery, r: NamedFromClause, ctx: SqlContext,
              compartment: Compartment | None, since: int | None,
              grants: Grants | None = None) -> Plan:
        """Choose how each clause is used: the most selective one drives the query (``IN``),
        the others test each candidate (``EXISTS``). When every clause matches many resources,
        none drives: candidates come in page order and the page fills after a few probes."""
        types = sq.res_types
        base: list[ColumnElement[bool]] = [r.c.deleted.is_(False)]
        if len(types) == 1:
            base.append(r.c.res_type == types[0])
        elif types:
            base.append(r.c.res_type.in_(types))
        if since is not None:
            base.append(r.c.last_updated >= since)
        sql_type = types[0] if len(types) == 1 else None
        conditions = [build_condition(c, sql_type, r, ctx) for c in sq.clauses]
        if compartment is not None:
            conditions.append(Condition(self._compartment_condition(compartment, types, r, ctx),
                                        selective=True))
        driver = next((c for c in conditions if c.selective), None)
        if driver is None:
            # Count (up to a cap) the matches of each simple clause, likeliest first; the first
            # under the cap drives.
            for condition in sorted((c for c in conditions if c.estimable),
                                    key=lambda c: c.likely_rank):
                assert condition.rows is not None, "an estimable condition has its rows"
                sample = select(literal(1)).select_from(
                    condition.rows.limit(self.selective).subquery())
                found = run(select(func.count()).select_from(sample.subquery())).scalar_one()
                if found < self.selective:
                    driver = condition
                    break
        parts = [c.as_in(r) if c is driver else c.as_exists(r) for c in conditions]
        if grants is not None:
            visible = self._visible_rows(grants, types or sorted(known_types()), r, ctx)
            if visible is not None:
                parts.append(visible)
        return Plan(and_(*base, *parts), dense=driver is None)

    def compartment_types(self) -> frozenset[str]:
        """The types that belong to a patient's compartment through a reference."""
        return frozenset(self._compartment)

    def compartment_members(self, res_type: str, res_id: str, resource: dict[str, Any]
                            ) -> set[Compartment]:
        """The patient compartments one version of a resource is in, from its own content
        (the index holds only the current version's)."""
        found: set[Compartment] = set()
        if res_type == "Patient":
            found.add(Compartment("Patient", res_id))
        params = set(self._compartment.get(res_type, []))
        if not params:
            return found
        rows = self.registry.index_rows(res_type, resource).get("idx_reference", [])
        for row in rows:
            if row.get("param") in params and row.get("target_type") == "Patient" and \
                    row.get("target_id"):
                found.add(Compartment("Patient", str(row["target_id"])))
        return found

    def _compartment_condition(self, compartment: Compartment, types: list[str],
                               r: NamedFromClause, ctx: SqlContext) -> ColumnElement[bool]:
        ref = ctx.alias(idx_reference)
        wanted = types or [*self._compartment, "Patient"]
        pairs = [(t, p) for t in wanted for p in self._compartment.get(t, [])]
        members = []
        if pairs:
            members.append(select(ref.c.rid).where(
                ref.c.target_type == compartment.kind, ref.c.target_id == compartment.id,
                tuple_(ref.c.res_type, ref.c.param).in_(pairs)))
        if "Patient" in wanted and compartment.kind == "Patient":
            patient = ctx.alias(R)
            members.append(select(patient.c.rid).where(patient.c.res_type == "Patient",
                                                       patient.c.res_id == compartment.id))
        if not members:
            return literal(False)
        # One IN over a UNION: the compartment's members drive the query on both databases.
        return r.c.rid.in_(members[0] if len(members) == 1 else union_all(*members))

    def by_identifier(self, conn: Connection, res_type: str,
                      pairs: Sequence[tuple[str, str]]) -> list[str]:
        """Ids of current resources carrying any ``system|value`` identifier, in the order of
        the pairs they match: the same index rows ``identifier=system|value`` searches."""
        matched = self.identifier_matches(conn, res_type, pairs)
        found: list[str] = []
        for pair in pairs:
            found += [res_id for res_id in matched.get(pair, ()) if res_id not in found]
        return found

    def identifier_matches(self, conn: Connection, res_type: str,
                           pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """For each ``(system, value)`` pair, the ids of current resources carrying it, in one
        prepared statement (the bridges match every HL7 message and MPPS on identifiers;
        planning a general search for each cost more than the rest of the message)."""
        pairs = list(dict.fromkeys(pairs))
        out: dict[tuple[str, str], list[str]] = {}
        for start in range(0, len(pairs), 8):
            chunk = pairs[start:start + 8]
            params: dict[str, str] = {"t": res_type}
            for n, (system, value) in enumerate(chunk):
                params[f"s{n}"], params[f"c{n}"] = system, value
            for row in conn.execute(_BY_IDENTIFIER[len(chunk)], params):
                out.setdefault((row.system, row.code), []).append(row.res_id)
        return out

    def visible_ids(self, conn: Connection, res_type: str, ids: Sequence[str] | None,
                    grants: Sequence[Grant], base: str, limit: int = 10_000) -> set[str]:
        """Which of ``ids`` (or, with ``None``, which resources of the type) any of the
        grants lets the caller see: the access policy's membership test."""
        if ids is not None and not ids:
            return set()
        r = R_ALIAS
        ctx = self.context(base, conn)
        where = [r.c.deleted.is_(False), r.c.res_type == res_type,
                 self.grant_condition(grants, [res_type], r, ctx)]
        if ids is not None:
            where.append(r.c.res_id.in_(list(ids)))
        rows = conn.execute(select(r.c.res_id).where(*where).limit(limit)).all()
        return {row.res_id for row in rows}

    def _run(self, conn: Connection, sq: SearchQuery, base: str, link_path: str,
             compartment: Compartment | None, since: int | None,
             visible: Visible | None = None, grants: Grants | None = None) -> SearchResult:
        counter = [0]
        ctx = self.context(base, conn, grants)
        r = R_ALIAS
        digest = _digest(link_path, sq.used)
        cursor = _decode_cursor(sq.page, digest) if sq.page else None

        def run(stmt: Executable) -> CursorResult[*tuple[Any, ...]]:
            counter[0] += 1
            return conn.execute(stmt)

        plan = self._plan(run, sq, r, ctx, compartment, since, grants)
        total = cursor.get("t") if cursor else None
        if sq.summary == "count" or (sq.total in ("accurate", "estimate") and cursor is None):
            total = run(select(func.count()).select_from(r).where(plan.where)).scalar_one()
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if total is not None:
            bundle["total"] = total
        entries: list[dict[str, Any]] = []
        links = [("self", sq.used + ([("_page", sq.page)] if sq.page else []))]
        issues = list(sq.issues)
        if sq.summary != "count" and sq.count > 0:
            page = Pager(run, sq, r, plan, cursor, ctx).page()
            rows = page.rows
            if rows:
                if (page.more and not page.backward) or (page.backward and cursor is not None):
                    links.append(("next", [*sq.used, ("_page", _encode_cursor(
                        page.keys[-1], rows[-1].rid, False, digest, total, page.segments[-1]))]))
                if (cursor is not None and not page.backward) or (page.backward and page.more):
                    links.append(("previous", [*sq.used, ("_page", _encode_cursor(
                        page.keys[0], rows[0].rid, True, digest, total, page.segments[0]))]))
            for row in rows:
                entries.append(self._entry(base, row, "match", sq))
            if sq.includes and rows:
                included, include_issues = self._includes(run, sq, rows, visible)
                issues += include_issues
                entries += [self._entry(base, row, "include", sq) for row in included]
        links.append(("first", sq.used))
        bundle["link"] = [{"relation": rel, "url": _link(base, link_path, params)}
                          for rel, params in links]
        if issues:
            entries.append({"resource": operation_outcome(issues),
                            "search": {"mode": "outcome"}})
        if entries:
            bundle["entry"] = entries
        return SearchResult(bundle, counter[0])

    # ----------------------------------------------------------------------------- entries

    def _entry(self, base: str, row: ResourceRow, mode: str, sq: SearchQuery) -> dict[str, Any]:
        if sq.summary in ("true", "text", "data") or sq.elements:
            resource: Any = summarize(jsonio.loads(row.content), sq.summary, sq.elements)
        else:
            resource = orjson.Fragment(row.content)
        return {"fullUrl": f"{base}/{row.res_type}/{row.res_id}", "resource": resource,
                "search": {"mode": mode}}

    # ----------------------------------------------------------------------------- includes

    def _includes(self, run: Run, sq: SearchQuery, rows: Sequence[ResourceRow],
                  visible: Visible | None = None) -> tuple[list[ResourceRow], list[Issue]]:
        seen = {(row.res_type, row.res_id) for row in rows}
        current = [(row.rid, row.res_type, row.res_id) for row in rows]
        included: list[ResourceRow] = []
        issues: list[Issue] = []
        for level in range(MAX_ITERATE + 1):
            active = [i for i in sq.includes if level == 0 or i.iterate]
            if not active or not current:
                break
            if level == MAX_ITERATE:
                issues.append(Issue("incomplete", f"_include:iterate stopped after {MAX_ITERATE}"
                                    " levels; follow up with a new search", severity="warning"))
                break
            wanted_keys: set[tuple[str, str]] = set()
            wanted_rids: set[int] = set()
            for include in active:
                if include.reverse:
                    wanted_rids |= self._reverse(run, include, current)
                else:
                    wanted_keys |= self._forward(run, include, current)
            fetched = self._fetch(run, wanted_keys - seen, wanted_rids)
            fresh = [row for row in fetched if (row.res_type, row.res_id) not in seen]
            if visible is not None:
                fresh = visible(fresh)
            room = self.max_includes - len(included)
            if len(fresh) > room:
                issues.append(Issue(
                    "too-costly", f"{len(fresh) - room} more included resources were left out "
                    f"(at most {self.max_includes} per page); use a smaller _count",
                    severity="warning"))
                fresh = fresh[:room]
            for row in fresh:
                seen.add((row.res_type, row.res_id))
            included += fresh
            current = [(row.rid, row.res_type, row.res_id) for row in fresh]
            if room <= len(fresh):
                break
        return included, issues

    def _forward(self, run: Run, include: Include, current: list[tuple[int, str, str]]
                 ) -> set[tuple[str, str]]:
        rids = [rid for rid, res_type, _ in current
                if include.source_type in ("*", res_type)]
        if not rids:
            return set()
        ref = idx_reference
        conds: list[ColumnElement[bool]] = [ref.c.rid.in_(rids), ref.c.target_type.is_not(None),
                                            ref.c.target_id.is_not(None)]
        if include.param is not None:
            conds.append(ref.c.param == include.param.code)
        if include.target_type:
            conds.append(ref.c.target_type == include.target_type)
        rows = run(select(ref.c.target_type, ref.c.target_id).where(*conds).distinct()).all()
        return {(row.target_type, row.target_id) for row in rows}

    def _reverse(self, run: Run, include: Include, current: list[tuple[int, str, str]]
                 ) -> set[int]:
        targets = [(res_type, res_id) for _, res_type, res_id in current
                   if include.target_type in (None, res_type)]
        if not targets:
            return set()
        ref = idx_reference
        conds = [_by_type(ref.c.target_type, ref.c.target_id, targets)]
        if include.source_type != "*":
            conds.append(ref.c.res_type == include.source_type)
        if include.param is not None:
            conds.append(ref.c.param == include.param.code)
        return {row.rid for row in run(select(ref.c.rid).where(*conds).distinct()).all()}

    def _fetch(self, run: Run, keys: set[tuple[str, str]], rids: set[int]
               ) -> list[ResourceRow]:
        if not keys and not rids:
            return []
        r = R
        source = r.join(V, and_(V.c.rid == r.c.rid, V.c.version_id == r.c.version_id))
        options = []
        if keys:
            options.append(_by_type(r.c.res_type, r.c.res_id, keys))
        if rids:
            options.append(r.c.rid.in_(sorted(rids)))
        # Deleted resources have no content in their current version: filtered here rather than
        # in SQL, where the flag tempts the planner into scanning by type.
        stmt = select(r.c.rid, r.c.res_type, r.c.res_id, V.c.content).select_from(source).where(
            or_(*options)).order_by(r.c.rid)
        return [row for row in run(stmt).all() if row.content is not None]

    # ----------------------------------------------------------------------------- value sets

    def _valueset(self, conn: Connection, url: str) -> list[tuple[str | None, str | None]]:
        """Concepts of a ValueSet stored on this server, by canonical URL or ``ValueSet/id``."""
        from sonobridge.core.search.valuesets import expand
        from sonobridge.store.resources import _read

        if url.startswith("ValueSet/"):
            stored = _read(conn, "ValueSet", url.split("/", 1)[1])
        else:
            ref = INDEX_TABLES["idx_uri"]
            row = conn.execute(select(R.c.res_id).join(ref, ref.c.rid == R.c.rid).where(
                ref.c.res_type == "ValueSet", ref.c.param == "url",
                ref.c.uri == url.split("|")[0], R.c.deleted.is_(False)).limit(1)).first()
            stored = _read(conn, "ValueSet", row.res_id) if row else None
        if stored is None or stored.content is None:
            raise CoreError(400, "not-found", f"ValueSet {url!r} is not stored on this server")
        return expand(jsonio.loads(stored.content))


def _by_type(type_col: ColumnElement[str], id_col: ColumnElement[str],
             keys: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """(type, id) pairs as ``type = t AND id IN (…)`` per type: both databases then use the
    (type, id) index, which a row-value IN list does not reliably get."""
    grouped: dict[str, list[str]] = {}
    for res_type, res_id in keys:
        grouped.setdefault(res_type, []).append(res_id)
    return or_(*(and_(type_col == t, id_col.in_(sorted(ids))) for t, ids in grouped.items()))


def _digest(path: str, used: list[tuple[str, str]]) -> str:
    text = path + "?" + urlencode(sorted(used))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_cursor(keys: list[Any], rid: int, backward: bool, digest: str,
                   total: int | None, segment: int = 0) -> str:
    data: dict[str, Any] = {"k": keys, "r": rid, "h": digest}
    if segment:
        data["s"] = segment
    if backward:
        data["p"] = 1
    if total is not None:
        data["t"] = total
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode_cursor(text: str, digest: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        assert isinstance(data, dict) and isinstance(data["k"], list)
        assert isinstance(data["r"], int)
    except (binascii.Error, orjson.JSONDecodeError, AssertionError, KeyError, ValueError):
        raise CoreError(400, "invalid", "_page is not a page link of this server",
                        expression=["_page"]) from None
    if data.get("h") != digest:
        raise CoreError(400, "invalid", "this page link belongs to a different search",
                        expression=["_page"])
    return data


def _link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url
