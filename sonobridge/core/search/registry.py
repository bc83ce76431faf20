"""The search parameters each resource type has: the R4 standard set plus active custom ones.

Standard parameters come from the official definitions shipped in ``fhir/definitions``; a
``SearchParameter`` resource stored with ``status=active`` adds (or overrides) one for new writes,
and ``$reindex`` / ``sonobridge reindex`` backfills it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from sonobridge.core.definitions import load, resource_types
from sonobridge.core.search.extract import ROW_BUILDERS, TABLE_FOR
from sonobridge.core.search.fhirpath import (
    SELF,
    Extractor,
    Node,
    Unsupported,
    build_extractor,
    cast_roots,
    compile_relative,
    relative_roots,
    split_top,
)

# Resource-level parameters answered from the resources table itself, not from index rows.
COLUMN_PARAMS = {"_id", "_lastUpdated"}
# Parameters the engine handles itself (they have no expression to index).
ENGINE_PARAMS = {"_has", "_list", "_type"}
INDEXED_TYPES = set(ROW_BUILDERS) | {"composite"}


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    url: str
    base: tuple[str, ...]
    expression: str | None
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (definition URL, relative expression)
    custom: bool = False
    description: str = ""

    @property
    def indexed(self) -> bool:
        return bool(self.expression) and self.type in INDEXED_TYPES and \
            self.code not in COLUMN_PARAMS


def _from_resource(resource: dict[str, Any], custom: bool) -> SearchParam | None:
    code, kind = resource.get("code"), resource.get("type")
    if not code or not kind:
        return None
    return SearchParam(
        code=code, type=kind, url=resource.get("url", ""),
        base=tuple(resource.get("base") or ()), expression=resource.get("expression"),
        targets=tuple(resource.get("target") or ()),
        modifiers=tuple(resource.get("modifier") or ()),
        components=tuple((c.get("definition", ""), c.get("expression", ""))
                         for c in resource.get("component") or []),
        custom=custom, description=(resource.get("description") or "")[:300])


# AuditEvent is written for every request, so every parameter indexed costs on every request.
# Only what the audit trail's readers search by is kept: IHE RESTful ATNA [ITI-81] and BALP
# (date, agent, patient, entity, type, subtype, action, outcome, source, address and the
# entity's type and role). The others (agent-role, entity-name, policy, site) are not
# searchable on AuditEvent here; the CapabilityStatement lists what is.
AUDIT_EVENT_PARAMS = frozenset({
    "_id", "_lastUpdated", "date", "agent", "agent-name", "altid", "address", "patient",
    "entity", "entity-type", "entity-role", "type", "subtype", "action", "outcome", "source"})


class _Memo:
    """The index rows of one parameter by the content of the elements they come from.

    Resources written in bulk repeat most of their indexed elements: every AuditEvent of one
    client has the same ``type``, ``agent`` and ``source``, every Observation of an SR the same
    ``subject`` and ``category``. An extractor whose ``roots`` are known reads only those
    top-level elements, so equal elements give equal rows, and the FHIRPath walk (most of an
    AuditEvent's write cost) is done once per distinct value. A parameter whose values rarely
    repeat (``date``, ``identifier``) turns its memo off after a trial, so it costs nothing.
    The rows handed out are shared: nobody changes them after they are built (the store's
    ``Writer.flush`` copies each into the row it inserts).
    """

    SIZE = 512
    TRIAL = 200
    MIN_HITS = 0.3

    __slots__ = ("hits", "lookups", "on", "rows")

    def __init__(self) -> None:
        # A parameter's rows; a composite's (``_CompositeRows``): its rows by table.
        self.rows: dict[bytes, Any] = {}
        self.lookups = 0
        self.hits = 0
        self.on = True

    def key(self, order: tuple[str, ...], resource: dict[str, Any],
            dumped: dict[str | tuple[str, ...], bytes]) -> bytes | None:
        """The memo key of ``resource`` for this parameter (its ``order``ed roots), or
        ``None`` when it is off. The hit rate is judged over every ``TRIAL`` lookups: the
        first values may repeat (a warm-up, one batch) where the rest do not. ``dumped``
        holds the resource's elements already serialised (one indexing): the parameters of
        a type share most of their roots (``code`` for eight of Observation's), so each is
        serialised once, and each key once (``_profile``, ``_tag``, ``_security`` and
        ``_source`` all read ``meta``); the key is the bytes ``orjson.dumps`` gives the list
        of them."""
        self.lookups += 1
        if self.lookups >= self.TRIAL:
            if self.hits < self.TRIAL * self.MIN_HITS:
                self.on = False
                self.rows.clear()
                return None
            self.lookups = self.hits = 0
        key = dumped.get(order)  # made for another parameter of the same roots
        if key is not None:
            return key
        parts = []
        for name in order:
            found = dumped.get(name)
            if found is None:
                try:
                    found = dumped[name] = orjson.dumps(resource.get(name))
                except TypeError:  # not JSON (a caller's own object): no memo for this one
                    return None
            parts.append(found)
        key = dumped[order] = b"[" + b",".join(parts) + b"]"
        return key

    def keep(self, key: bytes, rows: Any) -> None:
        if len(self.rows) >= self.SIZE:  # the oldest goes (dicts keep insertion order)
            with suppress(RuntimeError, StopIteration):  # another thread changed it meanwhile
                self.rows.pop(next(iter(self.rows)), None)
        self.rows[key] = rows


# One resource's component rows by (id of the node's value, id of its model, its type, the
# component's expression and type): the value itself (kept alive) and the rows.
_Shared = dict[tuple[int, int, str, str, str], tuple[Any, list[dict[str, Any]]]]


# A composite's components: the component parameter, its relative expression, compiled.
_Parts = list[tuple[SearchParam, str, Extractor]]


# A composite's rows for one resource, by table.
_CompositeRows = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _Step:
    """One indexed parameter of a type with what indexing it needs, looked up once per type
    instead of once per resource (a 55-Observation SR asks 42 parameters of each)."""

    param: SearchParam
    extract: Extractor
    roots: frozenset[str] | None
    parts: _Parts | None  # composites only; None when a component cannot be indexed
    # The top-level elements the rows come from, sorted (the memo key), or None: no memo
    # (``_memo_roots``; a composite has them when each branch of its expression and of its
    # components' does).
    order: tuple[str, ...] | None = None
    table: str = ""  # the index table of a parameter that is not a composite


@dataclass
class _TypeParams:
    params: dict[str, SearchParam] = field(default_factory=dict)
    extractors: dict[str, Extractor] = field(default_factory=dict)
    indexed: list[SearchParam] | None = None
    memos: dict[str, _Memo] = field(default_factory=dict)
    plan: list[_Step] | None = None


class Registry:
    """Search parameters by resource type, with compiled extractors. Thread-safe."""

    REFRESH_SECONDS = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._custom: dict[str, SearchParam] = {}
        self._types: dict[str, _TypeParams] = {}
        self.custom_stamp: int | None = None
        self.checked_at = 0.0

    @cached_property
    def standard(self) -> list[SearchParam]:
        """The R4 parameters, then the implementation guide's own (which may add or override)."""
        out = []
        for bundle in (load("search-parameters.json"), guide_search_parameters()):
            for entry in bundle["entry"]:
                param = _from_resource(entry["resource"], custom=False)
                if param is not None:
                    out.append(param)
        return out

    @cached_property
    def by_url(self) -> dict[str, SearchParam]:
        return {p.url: p for p in self.standard}

    @cached_property
    def _leaders(self) -> dict[str, SearchParam]:
        """Composites that share their expression and first component (Observation's four
        ``code-value-*`` all start with ``code`` on the resource), by follower URL -> the
        one of them whose ``$0`` rows stand for all: see ``composite_leader``. The leader is
        the one whose second component is a quantity when there is one (most Observations
        here are measurements, whose groups are then complete for the leader too), else the
        first by code. Built-in, indexable definitions only, so that a SearchParameter a site
        adds never changes which rows existing resources have."""
        groups: dict[tuple[str, tuple[str, str]], list[SearchParam]] = {}
        for param in self.standard:
            if param.type == "composite" and param.components and param.expression \
                    and param.indexed and self._parts(param) is not None:
                groups.setdefault((param.expression, param.components[0]), []).append(param)
        leaders: dict[str, SearchParam] = {}
        for members in groups.values():
            members.sort(key=lambda p: (not self._second_is_quantity(p), p.code))
            for follower in members[1:]:
                leaders[follower.url] = members[0]
        return leaders

    def _second_is_quantity(self, param: SearchParam) -> bool:
        second = self.component(param.components[1][0]) if len(param.components) > 1 else None
        return second is not None and second.type == "quantity"

    def composite_leader(self, param: SearchParam) -> SearchParam | None:
        """The composite whose first-component rows answer ``param:missing`` (None: its own).

        A composite matches only a group in which every component matched, so a group that
        lacks a later component (``code-value-date`` of a measurement with a valueQuantity)
        can never match; only ``:missing``, which asks whether the first component is there,
        reads its rows. Such groups are indexed for the leader alone: about 220 of an SR's
        1,355 index rows were groups no search could match."""
        if param.custom or param.type != "composite":
            return None
        return self._leaders.get(param.url)

    def set_custom(self, resources: Iterable[dict[str, Any]], stamp: int | None) -> None:
        custom = {}
        for resource in resources:
            if resource.get("status") != "active":
                continue
            param = _from_resource(resource, custom=True)
            if param is not None and param.expression:
                custom[param.url or f"custom:{param.code}"] = param
        with self._lock:
            self._custom = custom
            self._types = {}
            self.custom_stamp = stamp
            self.checked_at = time.monotonic()

    def _for_type(self, res_type: str) -> _TypeParams:
        found = self._types.get(res_type)
        if found is not None:
            return found
        with self._lock:
            found = self._types.get(res_type)
            if found is None:
                found = _TypeParams()
                bases = {res_type, "Resource", "DomainResource"}
                for param in [*self.standard, *self._custom.values()]:
                    if bases & set(param.base):
                        found.params[param.code] = param
                if res_type == "AuditEvent":
                    found.params = {code: param for code, param in found.params.items()
                                    if code in AUDIT_EVENT_PARAMS or param.custom}
                self._types[res_type] = found
        return found

    def params(self, res_type: str) -> dict[str, SearchParam]:
        return self._for_type(res_type).params

    def indexed(self, res_type: str) -> list[SearchParam]:
        entry = self._for_type(res_type)
        if entry.indexed is None:
            entry.indexed = [p for p in entry.params.values() if p.indexed]
        return entry.indexed

    def get(self, res_type: str, code: str) -> SearchParam | None:
        return self._for_type(res_type).params.get(code)

    def component(self, url: str) -> SearchParam | None:
        found = self.by_url.get(url)
        if found is None:
            found = next((p for p in self._custom.values() if p.url == url), None)
        return found

    def extractor(self, res_type: str, param: SearchParam) -> Extractor:
        entry = self._for_type(res_type)
        found = entry.extractors.get(param.code)
        if found is None:
            found = build_extractor(param.expression or "", res_type)
            entry.extractors[param.code] = found
        return found

    def index_rows(self, res_type: str, resource: dict[str, Any]
                   ) -> dict[str, list[dict[str, Any]]]:
        """Every index row for one resource, by table name (the store's ``Indexer``)."""
        root = Node(resource, "Resource", None)
        out: dict[str, list[dict[str, Any]]] = {}
        present = resource.keys()
        entry = self._for_type(res_type)
        shared: _Shared = {}
        # The resource's elements serialised, and memo keys by roots (``_Memo.key``).
        dumped: dict[str | tuple[str, ...], bytes] = {}
        memos = entry.memos
        for step in self._plan(res_type, entry):
            roots = step.roots
            if roots is not None and roots.isdisjoint(present):
                continue
            param = step.param
            key = None
            memo: _Memo | None = None
            order = step.order
            if order is not None:
                memo = memos.get(param.code)
                if memo is None:
                    memo = memos.setdefault(param.code, _Memo())
                if memo.on:
                    key = memo.key(order, resource, dumped)
                    if key is not None:
                        found = memo.rows.get(key)
                        if found is not None:
                            memo.hits += 1
                            if param.type == "composite":
                                for table, rows in found.items():
                                    out.setdefault(table, []).extend(rows)
                            elif found:
                                out.setdefault(step.table, []).extend(found)
                            continue
            nodes = step.extract(root)
            if param.type == "composite":
                if step.parts is None:
                    continue
                if key is None:
                    if nodes:
                        self._composite_rows(param, nodes, out, shared, step.parts)
                    continue
                built: _CompositeRows = {}
                if nodes:
                    self._composite_rows(param, nodes, built, shared, step.parts)
                    for table, rows in built.items():
                        out.setdefault(table, []).extend(rows)
                if memo is not None:
                    memo.keep(key, built)
                continue
            rows = ROW_BUILDERS[param.type](param.code, nodes) if nodes else []
            if rows:
                mark_sort_rows(param.type, rows)
                out.setdefault(step.table, []).extend(rows)
            if key is not None and memo is not None:
                memo.keep(key, rows)
        return out

    def _plan(self, res_type: str, entry: _TypeParams) -> list[_Step]:
        """The type's indexed parameters with their extractors, roots and composite parts
        (built on first use; a custom parameter change starts a new ``_TypeParams``)."""
        plan = entry.plan
        if plan is None:
            plan = []
            for param in self.indexed(res_type):
                extract = self.extractor(res_type, param)
                roots: frozenset[str] | None = getattr(extract, "roots", None)
                if param.type == "composite":
                    parts = self._parts(param)
                    found = _memo_roots(param, res_type, parts) if parts else None
                    plan.append(_Step(param, extract, roots, parts,
                                      tuple(sorted(found)) if found is not None else None))
                else:
                    found = roots
                    if roots is not None:  # narrowed where a cast keeps one choice
                        narrowed = _memo_roots(param, res_type)
                        if narrowed is not None and narrowed <= roots:
                            found = narrowed
                    plan.append(_Step(param, extract, roots, None,
                                      tuple(sorted(found)) if found is not None else None,
                                      TABLE_FOR[param.type]))
            entry.plan = plan
        return plan

    def _parts(self, param: SearchParam) -> _Parts | None:
        """A composite's components, or ``None`` when one cannot be indexed here: an unknown
        definition, or an expression the compiler does not take (MolecularSequence's
        ``%resource.referenceSeq.chromosome``). Such a composite is not indexed; the
        resource is stored and its other parameters are."""
        parts: _Parts = []
        for definition, expression in param.components:
            component = self.component(definition)
            if component is None or component.type not in ROW_BUILDERS:
                return None
            try:
                parts.append((component, expression, _relative(expression)))
            except Unsupported:
                return None
        return parts

    def _composite_rows(self, param: SearchParam, nodes: list[Node],
                        out: dict[str, list[dict[str, Any]]],
                        shared: _Shared | None = None, parts: _Parts | None = None) -> None:
        """The rows of each component of each node, ``grp`` tying a node's together.

        ``shared`` (one resource's indexing) keeps the rows of a component once built for a
        node, named with the empty parameter: the composites of a type repeat components on
        the same nodes (Observation's eight ``code-value-*`` and ``combo-*`` all index
        ``code`` on the resource and on each component), so each is extracted once and
        copied under each composite's name. Each entry holds its node's value, so the id in
        its key cannot be reused by another object while the entry lives."""
        if parts is None:
            parts = self._parts(param)
            if parts is None:
                return
        # A follower keeps only complete groups (``composite_leader``).
        complete_only = self.composite_leader(param) is not None
        for group, node in enumerate(nodes[:32000]):
            made: list[tuple[str, list[dict[str, Any]]]] = []
            for position, (component, expression, extract) in enumerate(parts):
                name = f"{param.code}${position}"
                if shared is None:
                    rows = _component_rows(component.type, name, extract(node))
                    for row in rows:
                        row["grp"] = group
                else:
                    key = (id(node.value), id(node.model), node.fhir_type, expression,
                           component.type)
                    found = shared.get(key)
                    if found is None:
                        found = shared[key] = (node.value, _component_rows(
                            component.type, "", extract(node)))
                    built = found[1]
                    rows = [{**row, "param": name + row["param"], "grp": group}
                            for row in built]
                if not rows and complete_only:
                    break
                made.append((TABLE_FOR[component.type], rows))
            else:
                for table, rows in made:
                    if rows:
                        out.setdefault(table, []).extend(rows)


def _component_rows(param_type: str, name: str, values: list[Node]) -> list[dict[str, Any]]:
    """A composite component's rows: its type's, less what no composite search reads. A
    composite matches a token on its system and code (``_composite_condition`` has no
    ``:text``), so its token rows carry no text and stay out of the text index, which is
    partial (``tables.py``). A row that had only a text stays, empty: ``:missing`` asks
    whether the first component is there at all."""
    rows = ROW_BUILDERS[param_type](name, values)
    if param_type != "token":
        return rows
    out: list[dict[str, Any]] = []
    for row in rows:
        row["text"] = None
        if row not in out:
            out.append(row)
    return out


def _memo_roots(param: SearchParam, res_type: str, parts: _Parts | None = None
                ) -> frozenset[str] | None:
    """The top-level elements of a ``res_type`` resource that a parameter's rows come from,
    or ``None`` when that is not known here (then its rows are built every time): the memo
    key. Narrower than the extractor's ``roots`` where a cast keeps one choice: a
    measurement's ``value-string`` rows (none) come from ``valueString`` and
    ``valueCodeableConcept`` alone, not from its ``valueQuantity``, so they are found again
    for the next measurement. A composite branch that is the resource itself (``Observation``,
    the ``code-value-*`` composites) reads what its components' expressions start with
    (``code``, and of ``value`` the choices the cast keeps)."""
    if not param.expression:
        return None
    roots: set[str] = set()
    for branch in split_top(param.expression, "|"):
        found = cast_roots(branch, res_type)
        if found is None:
            return None
        if SELF in found:
            if parts is None:
                return None
            for _component, expression, _extract in parts:  # the resource is the node
                inner = relative_roots(expression, res_type)
                if inner is None:
                    return None
                roots |= inner
            continue
        roots |= found
    return frozenset(roots)


# The column each parameter type sorts on: (ascending key, descending key).
SORT_COLUMNS = {"string": ("value", "value"), "token": ("code", "code"),
                "reference": ("target_id", "target_id"), "date": ("low", "high"),
                "number": ("value", "value"), "quantity": ("value", "value"),
                "uri": ("uri", "uri")}


def mark_sort_rows(param_type: str, rows: list[dict[str, Any]]) -> None:
    """Flag the row with the lowest (1) and the highest (2) sort value, 3 when the same."""
    asc_col, desc_col = SORT_COLUMNS[param_type]
    usable = [r for r in rows if r.get(asc_col) is not None]
    if not usable:
        return
    low = min(usable, key=lambda r: r[asc_col])
    high = max((r for r in rows if r.get(desc_col) is not None), key=lambda r: r[desc_col],
               default=low)
    low["sort"] = 1
    high["sort"] = (high.get("sort") or 0) | 2


_RELATIVE: dict[str, Extractor] = {}


def _relative(expression: str) -> Extractor:
    found = _RELATIVE.get(expression)
    if found is None:
        found = compile_relative(expression)
        _RELATIVE[expression] = found
    return found


def searchable_types() -> tuple[str, ...]:
    return resource_types()


def guide_search_parameters() -> dict[str, Any]:
    path = Path(__file__).parent.parent.parent / "conformance" / "search-parameters.json"
    bundle: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return bundle
