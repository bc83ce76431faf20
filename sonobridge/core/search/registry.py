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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sonobridge.core.definitions import load, resource_types
from sonobridge.core.search.extract import ROW_BUILDERS, TABLE_FOR
from sonobridge.core.search.fhirpath import Extractor, Node, build_extractor, compile_relative

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


@dataclass
class _TypeParams:
    params: dict[str, SearchParam] = field(default_factory=dict)
    extractors: dict[str, Extractor] = field(default_factory=dict)
    indexed: list[SearchParam] | None = None


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
        for param in self.indexed(res_type):
            extract = self.extractor(res_type, param)
            roots = getattr(extract, "roots", None)
            if roots is not None and roots.isdisjoint(present):
                continue
            nodes = extract(root)
            if not nodes:
                continue
            if param.type == "composite":
                self._composite_rows(param, nodes, out)
                continue
            rows = ROW_BUILDERS[param.type](param.code, nodes)
            if rows:
                mark_sort_rows(param.type, rows)
                out.setdefault(TABLE_FOR[param.type], []).extend(rows)
        return out

    def _composite_rows(self, param: SearchParam, nodes: list[Node],
                        out: dict[str, list[dict[str, Any]]]) -> None:
        parts = []
        for definition, expression in param.components:
            component = self.component(definition)
            if component is None or component.type not in ROW_BUILDERS:
                return
            parts.append((component, _relative(expression)))
        for group, node in enumerate(nodes[:32000]):
            for position, (component, extract) in enumerate(parts):
                rows = ROW_BUILDERS[component.type](f"{param.code}${position}", extract(node))
                for row in rows:
                    row["grp"] = group
                if rows:
                    out.setdefault(TABLE_FOR[component.type], []).extend(rows)


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
