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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import ColumnElement, and_, func, literal, or_, select, true, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from sonobridge import jsonio
from sonobridge.fhir.definitions import load
from sonobridge.fhir.errors import FhirError, Issue, operation_outcome
from sonobridge.fhir.headers import prefer
from sonobridge.fhir.search.extract import DATE_MAX, DATE_MIN
from sonobridge.fhir.search.params import Include, QueryParser, SearchQuery
from sonobridge.fhir.search.registry import SORT_COLUMNS, Registry
from sonobridge.fhir.search.sql import TABLE, SqlContext, clause_condition
from sonobridge.fhir.search.summary import summarize
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import INDEX_TABLES, idx_reference
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

MAX_ITERATE = 5
_STR_MAX, _STR_MIN = "\U0010ffff", ""
_NUM_MAX, _NUM_MIN = 1e308, -1e308


@dataclass
class Compartment:
    """``Patient/123/…``: restrict to resources in that patient's compartment."""

    kind: str
    id: str


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
        self._compartment = compartment_params()

    # ----------------------------------------------------------------------------- entry points

    def parser(self, strict: bool) -> QueryParser:
        return QueryParser(self.registry, default_count=self.default_count,
                           max_count=self.max_count, strict=strict)

    def context(self, base: str, conn: Connection) -> SqlContext:
        return SqlContext(base=base, valueset=lambda url: self._valueset(conn, url),
                          component=self.registry.component)

    def search(self, res_types: list[str], query: Sequence[tuple[str, str]], *, base: str,
               headers: Mapping[str, str], link_path: str,
               compartment: Compartment | None = None, conn: Connection | None = None,
               since: int | None = None) -> SearchResult:
        strict = prefer(headers).get("handling") == "strict"
        sq = self.parser(strict).parse(res_types or ["Resource"], list(query),
                                       passthrough=("_since",) if since is not None else ())
        sq.res_types = res_types
        if conn is not None:
            return self._run(conn, sq, base, link_path, compartment, since)
        with self.store.reader.connect() as own:
            return self._run(own, sq, base, link_path, compartment, since)

    def matches(self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]],
                base: str, limit: int) -> list[tuple[int, str]]:
        """(rid, id) of resources matching a condition (conditional interactions): strict."""
        sq = self.parser(strict=True).parse([res_type], list(query))
        if not sq.clauses:
            raise FhirError(400, "invalid", "a conditional request needs search criteria")
        r = aliased(R, name="r")
        where = self._where(sq, r, self.context(base, conn), None, None)
        rows = conn.execute(select(r.c.rid, r.c.res_id).where(where).order_by(r.c.rid)
                            .limit(limit)).all()
        return [(row.rid, row.res_id) for row in rows]

    # ----------------------------------------------------------------------------- the search

    def _where(self, sq: SearchQuery, r: Any, ctx: SqlContext, compartment: Compartment | None,
               since: int | None) -> ColumnElement[bool]:
        types = sq.res_types
        conds: list[ColumnElement[bool]] = [r.c.deleted.is_(False)]
        if len(types) == 1:
            conds.append(r.c.res_type == types[0])
        elif types:
            conds.append(r.c.res_type.in_(types))
        sql_type = types[0] if len(types) == 1 else None
        for clause in sq.clauses:
            conds.append(clause_condition(clause, sql_type, r, ctx))
        if compartment is not None:
            conds.append(self._compartment_condition(compartment, types, r))
        if since is not None:
            conds.append(r.c.last_updated >= since)
        return and_(*conds)

    def _compartment_condition(self, compartment: Compartment, types: list[str], r: Any
                               ) -> ColumnElement[bool]:
        ref = aliased(idx_reference)
        wanted = types or [*self._compartment, "Patient"]
        pairs = [(t, p) for t in wanted for p in self._compartment.get(t, [])]
        options: list[ColumnElement[bool]] = []
        if pairs:
            sub = select(ref.c.rid).where(ref.c.target_type == compartment.kind,
                                          ref.c.target_id == compartment.id,
                                          tuple_(ref.c.res_type, ref.c.param).in_(pairs))
            options.append(r.c.rid.in_(sub))
        if "Patient" in wanted and compartment.kind == "Patient":
            options.append(and_(r.c.res_type == "Patient", r.c.res_id == compartment.id))
        return or_(*options) if options else literal(False)

    def _run(self, conn: Connection, sq: SearchQuery, base: str, link_path: str,
             compartment: Compartment | None, since: int | None) -> SearchResult:
        counter = [0]
        ctx = self.context(base, conn)
        r = aliased(R, name="r")
        where = self._where(sq, r, ctx, compartment, since)
        digest = _digest(link_path, sq.used)
        cursor = _decode_cursor(sq.page, digest) if sq.page else None

        def run(stmt: Any) -> Any:
            counter[0] += 1
            return conn.execute(stmt)

        total = cursor.get("t") if cursor else None
        if sq.summary == "count" or (sq.total in ("accurate", "estimate") and cursor is None):
            total = run(select(func.count()).select_from(r).where(where)).scalar_one()
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if total is not None:
            bundle["total"] = total
        entries: list[dict[str, Any]] = []
        links = [("self", sq.used + ([("_page", sq.page)] if sq.page else []))]
        issues = list(sq.issues)
        if sq.summary != "count" and sq.count > 0:
            rows, has_more, backward = self._page(run, sq, r, where, cursor)
            keys = [self._sort_values(sq, row) for row in rows]
            if rows:
                if (has_more and not backward) or (backward and cursor is not None):
                    links.append(("next", [*sq.used, ("_page", _encode_cursor(
                        keys[-1], rows[-1].rid, False, digest, total))]))
                if (cursor is not None and not backward) or (backward and has_more):
                    links.append(("previous", [*sq.used, ("_page", _encode_cursor(
                        keys[0], rows[0].rid, True, digest, total))]))
            for row in rows:
                entries.append(self._entry(base, row, "match", sq))
            if sq.includes and rows:
                included, include_issues = self._includes(run, sq, rows)
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

    # ----------------------------------------------------------------------------- paging

    def _sort_columns(self, sq: SearchQuery, r: Any) -> tuple[list[tuple[Any, bool]], list[Any]]:
        """(key expression, descending) per sort key, and the outer joins they need."""
        keys, joins = [], []
        for code, param, desc in sq.sort:
            if code == "_id":
                keys.append((r.c.res_id, desc))
                continue
            if code == "_lastUpdated":
                keys.append((r.c.last_updated, desc))
                continue
            assert param is not None
            table = aliased(INDEX_TABLES[TABLE[param.type]])
            column = table.c[SORT_COLUMNS[param.type][1 if desc else 0]]
            joins.append((table, and_(table.c.rid == r.c.rid, table.c.param == code,
                                      table.c.sort.in_((2, 3) if desc else (1, 3)))))
            keys.append((func.coalesce(column, _sentinel(param.type, desc)), desc))
        return keys, joins

    def _page(self, run: Any, sq: SearchQuery, r: Any, where: ColumnElement[bool],
              cursor: dict[str, Any] | None) -> tuple[list[Any], bool, bool]:
        keys, joins = self._sort_columns(sq, r)
        backward = bool(cursor and cursor.get("p"))
        source = r.join(V, and_(V.c.rid == r.c.rid, V.c.version_id == r.c.version_id))
        for table, on in joins:
            source = source.outerjoin(table, on)
        stmt = select(r.c.rid, r.c.res_type, r.c.res_id, V.c.content,
                      *(k.label(f"k{i}") for i, (k, _) in enumerate(keys))
                      ).select_from(source).where(where)
        if cursor is not None:
            stmt = stmt.where(_after(keys, cursor["k"], r.c.rid, cursor["r"], not backward))
        order = []
        for key, desc in keys:
            ascending = (not desc) != backward
            order.append(key.asc() if ascending else key.desc())
        order.append(r.c.rid.desc() if backward else r.c.rid.asc())
        rows = run(stmt.order_by(*order).limit(sq.count + 1)).all()
        has_more = len(rows) > sq.count
        rows = rows[:sq.count]
        if backward:
            rows.reverse()
        return rows, has_more, backward

    def _sort_values(self, sq: SearchQuery, row: Any) -> list[Any]:
        return [getattr(row, f"k{i}") for i in range(len(sq.sort))]

    # ----------------------------------------------------------------------------- entries

    def _entry(self, base: str, row: Any, mode: str, sq: SearchQuery) -> dict[str, Any]:
        if sq.summary in ("true", "text", "data") or sq.elements:
            resource: Any = summarize(jsonio.loads(row.content), sq.summary, sq.elements)
        else:
            resource = orjson.Fragment(row.content)
        return {"fullUrl": f"{base}/{row.res_type}/{row.res_id}", "resource": resource,
                "search": {"mode": mode}}

    # ----------------------------------------------------------------------------- includes

    def _includes(self, run: Any, sq: SearchQuery, rows: list[Any]
                  ) -> tuple[list[Any], list[Issue]]:
        seen = {(row.res_type, row.res_id) for row in rows}
        current = [(row.rid, row.res_type, row.res_id) for row in rows]
        included: list[Any] = []
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

    def _forward(self, run: Any, include: Include, current: list[tuple[int, str, str]]
                 ) -> set[tuple[str, str]]:
        rids = [rid for rid, res_type, _ in current
                if include.source_type in ("*", res_type)]
        if not rids:
            return set()
        ref = idx_reference
        conds = [ref.c.rid.in_(rids), ref.c.target_type.is_not(None),
                 ref.c.target_id.is_not(None)]
        if include.param is not None:
            conds.append(ref.c.param == include.param.code)
        if include.target_type:
            conds.append(ref.c.target_type == include.target_type)
        rows = run(select(ref.c.target_type, ref.c.target_id).where(*conds).distinct()).all()
        return {(row.target_type, row.target_id) for row in rows}

    def _reverse(self, run: Any, include: Include, current: list[tuple[int, str, str]]
                 ) -> set[int]:
        targets = [(res_type, res_id) for _, res_type, res_id in current
                   if include.target_type in (None, res_type)]
        if not targets:
            return set()
        ref = idx_reference
        conds = [tuple_(ref.c.target_type, ref.c.target_id).in_(targets)]
        if include.source_type != "*":
            conds.append(ref.c.res_type == include.source_type)
        if include.param is not None:
            conds.append(ref.c.param == include.param.code)
        return {row.rid for row in run(select(ref.c.rid).where(*conds).distinct()).all()}

    def _fetch(self, run: Any, keys: set[tuple[str, str]], rids: set[int]) -> list[Any]:
        if not keys and not rids:
            return []
        r = R
        source = r.join(V, and_(V.c.rid == r.c.rid, V.c.version_id == r.c.version_id))
        options = []
        if keys:
            options.append(tuple_(r.c.res_type, r.c.res_id).in_(sorted(keys)))
        if rids:
            options.append(r.c.rid.in_(sorted(rids)))
        stmt = select(r.c.rid, r.c.res_type, r.c.res_id, V.c.content).select_from(source).where(
            r.c.deleted.is_(False), or_(*options)).order_by(r.c.rid)
        return run(stmt).all()

    # ----------------------------------------------------------------------------- value sets

    def _valueset(self, conn: Connection, url: str) -> list[tuple[str | None, str | None]]:
        """Concepts of a ValueSet stored on this server, by canonical URL or ``ValueSet/id``."""
        from sonobridge.fhir.search.valuesets import expand
        from sonobridge.store.resources import _read

        if url.startswith("ValueSet/"):
            stored = _read(conn, "ValueSet", url.split("/", 1)[1])
        else:
            ref = aliased(INDEX_TABLES["idx_uri"])
            row = conn.execute(select(R.c.res_id).join(ref, ref.c.rid == R.c.rid).where(
                ref.c.res_type == "ValueSet", ref.c.param == "url",
                ref.c.uri == url.split("|")[0], R.c.deleted.is_(False)).limit(1)).first()
            stored = _read(conn, "ValueSet", row.res_id) if row else None
        if stored is None or stored.content is None:
            raise FhirError(400, "not-found", f"ValueSet {url!r} is not stored on this server")
        return expand(jsonio.loads(stored.content))


def _sentinel(param_type: str, desc: bool) -> Any:
    if param_type == "date":
        return DATE_MIN if desc else DATE_MAX
    if param_type in ("number", "quantity"):
        return _NUM_MIN if desc else _NUM_MAX
    return _STR_MIN if desc else _STR_MAX


def _after(keys: list[tuple[Any, bool]], values: list[Any], rid_col: Any, rid: int,
           forward: bool) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before the cursor in display order."""
    if len(values) != len(keys):
        raise FhirError(400, "invalid", "this page link does not belong to this search",
                        expression=["_page"])
    options = []
    for i in range(len(keys) + 1):
        equal = [keys[j][0] == values[j] for j in range(i)]
        if i < len(keys):
            key, desc = keys[i]
            larger = (not desc) == forward
            step = key > values[i] if larger else key < values[i]
        else:
            step = rid_col > rid if forward else rid_col < rid
        options.append(and_(*equal, step) if equal else step)
    return or_(*options) if options else true()


def _digest(path: str, used: list[tuple[str, str]]) -> str:
    text = path + "?" + urlencode(sorted(used))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_cursor(keys: list[Any], rid: int, backward: bool, digest: str,
                   total: int | None) -> str:
    data = {"k": keys, "r": rid, "h": digest}
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
        raise FhirError(400, "invalid", "_page is not a page link of this server",
                        expression=["_page"]) from None
    if data.get("h") != digest:
        raise FhirError(400, "invalid", "this page link belongs to a different search",
                        expression=["_page"])
    return data


def _link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url
