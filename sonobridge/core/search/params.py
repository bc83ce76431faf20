"""Parsing a search query string into clauses, checked against the parameter definitions.

Each query parameter becomes a ``Clause`` (values OR-ed, clauses AND-ed). Chains
(``subject:Patient.name``) and reverse chains (``_has:Observation:patient:code``) nest a clause
for the other resource type. Result parameters (``_count``, ``_sort``, ``_include``…) go to the
``SearchQuery``. Unknown parameters become issues: reported in the bundle under
``Prefer: handling=lenient`` (the default), a 400 under ``handling=strict``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.search.registry import Registry, SearchParam

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
PREFIXED_TYPES = {"date", "number", "quantity"}
MODIFIERS = {
    "string": {"missing", "exact", "contains"},
    "token": {"missing", "not", "text", "in", "not-in", "of-type"},
    "reference": {"missing", "identifier"},  # plus :[type]
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "above", "below"},
    "composite": {"missing"},
}
UNSUPPORTED_MODIFIERS = {"above", "below"}  # for token and reference: need terminology/hierarchy
SUMMARY_VALUES = {"true", "text", "data", "count", "false"}
TOTAL_VALUES = {"none", "estimate", "accurate"}
RESULT_PARAMS = {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
                 "_page", "_contained", "_containedType", "_format", "_pretty"}
UNSUPPORTED_PARAMS = {"_text", "_content", "_query", "_filter", "_contained", "_containedType"}
MAX_CHAIN = 4


def split_values(text: str, sep: str = ",") -> list[str]:
    """Split at unescaped ``sep`` and undo FHIR's backslash escapes (``\\,`` ``\\$`` ``\\|``)."""
    parts, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in ",$|\\":
            current.append("\\" + text[i + 1])
            i += 2
            continue
        if char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([,$|\\])", r"\1", text)


@dataclass
class Clause:
    """One query parameter. ``kind`` is the parameter type, or one of the special kinds."""

    name: str
    kind: str  # string token … composite | _id | _lastUpdated | _list | chain | has
    param: SearchParam | None = None
    modifier: str | None = None
    values: list[str] = field(default_factory=list)
    # chain: follow ``param`` (a reference) to ``target_types`` and apply ``inner`` there.
    # has: resources of ``source_type`` whose ``param`` points here and match ``inner``.
    target_types: list[str] = field(default_factory=list)
    source_type: str | None = None
    inner: Clause | None = None
    by_type: dict[str, Clause] = field(default_factory=dict)


@dataclass
class Include:
    source_type: str  # the type holding the reference
    param: SearchParam | None  # None for "*"
    target_type: str | None
    iterate: bool
    reverse: bool

    def text(self) -> str:
        kind = "_revinclude" if self.reverse else "_include"
        suffix = ":iterate" if self.iterate else ""
        target = f":{self.target_type}" if self.target_type else ""
        return f"{kind}{suffix}={self.source_type}:{self.param.code if self.param else '*'}{target}"


@dataclass
class SearchQuery:
    res_types: list[str]
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    sort: list[tuple[str, SearchParam | None, bool]] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    total: str = "none"
    page: str | None = None
    issues: list[Issue] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)  # for the self link


def _bad(message: str, name: str) -> CoreError:
    return CoreError(400, "invalid", message, expression=[name])


class QueryParser:
    def __init__(self, registry: Registry, *, default_count: int, max_count: int,
                 strict: bool) -> None:
        self.registry = registry
        self.default_count = default_count
        self.max_count = max_count
        self.strict = strict

    def parse(self, res_types: list[str], query: list[tuple[str, str]],
              passthrough: tuple[str, ...] = ()) -> SearchQuery:
        """``passthrough``: names the caller handles itself, kept in the page links."""
        sq = SearchQuery(res_types=res_types, count=self.default_count)
        for name, value in query:
            if name in passthrough:
                sq.used.append((name, value))
                continue
            if name in ("_include:iterate", "_revinclude:iterate", "_include:recurse",
                        "_revinclude:recurse"):
                include = self._include(name.split(":")[0], value, sq)
                include.iterate = True
                sq.includes.append(include)
                sq.used.append((name, value))
                continue
            if name in RESULT_PARAMS - UNSUPPORTED_PARAMS:
                self._result_param(sq, name, value)
                continue
            if name == "_type" and len(res_types) > 0:
                continue  # handled by the caller for system search
            if name in UNSUPPORTED_PARAMS:
                self._unknown(sq, name, f"parameter {name} is not supported; it was ignored")
                continue
            clause = self._clause(res_types[0] if len(res_types) == 1 else None, res_types,
                                  name, value, sq)
            if clause is not None:
                sq.clauses.append(clause)
                sq.used.append((name, value))
        return sq

    # ------------------------------------------------------------------ result parameters

    def _result_param(self, sq: SearchQuery, name: str, value: str) -> None:
        if name == "_count":
            if not value.isdecimal():
                raise _bad("_count must be a non-negative integer", "_count")
            count = int(value)
            if count > self.max_count:
                raise _bad(f"_count may be at most {self.max_count}", "_count")
            sq.count = count
        elif name == "_sort":
            for key in split_values(value):
                desc = key.startswith("-")
                code = key[1:] if desc else key
                if code in ("_id", "_lastUpdated"):
                    sq.sort.append((code, None, desc))
                    continue
                param = self._common_param(sq.res_types, code)
                if param is None or not param.indexed or param.type == "composite":
                    raise _bad(f"cannot sort by {code!r}: not a sortable search parameter of "
                               f"{', '.join(sq.res_types) or 'these types'}", "_sort")
                sq.sort.append((code, param, desc))
        elif name in ("_include", "_revinclude"):
            sq.includes.append(self._include(name, value, sq))
        elif name == "_summary":
            if value not in SUMMARY_VALUES:
                raise _bad(f"_summary must be one of {', '.join(sorted(SUMMARY_VALUES))}",
                           "_summary")
            sq.summary = None if value == "false" else value
        elif name == "_elements":
            sq.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_total":
            if value not in TOTAL_VALUES:
                raise _bad("_total must be none, estimate or accurate", "_total")
            sq.total = value
        elif name == "_page":
            sq.page = value
            return
        if name not in ("_format", "_pretty"):
            sq.used.append((name, value))

    def _common_param(self, res_types: list[str], code: str) -> SearchParam | None:
        found = None
        for res_type in res_types or []:
            param = self.registry.get(res_type, code)
            if param is None:
                return None
            found = found or param
        return found

    def _include(self, name: str, value: str, sq: SearchQuery) -> Include:
        reverse = name == "_revinclude"
        iterate = False
        parts = value.split(":")
        if value == "*":
            return Include("*", None, None, iterate=False, reverse=reverse)
        if len(parts) < 2 or len(parts) > 3:
            raise _bad(f"{name} takes Type:param[:targetType], got {value!r}", name)
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        from sonobridge.core.validation import known_types

        if source not in known_types() or (target and target not in known_types()):
            raise _bad(f"{name}={value}: unknown resource type", name)
        if code == "*":
            return Include(source, None, target, iterate, reverse)
        param = self.registry.get(source, code)
        if param is None or param.type != "reference":
            raise _bad(f"{name}={value}: {code!r} is not a reference parameter of {source}", name)
        return Include(source, param, target, iterate, reverse)

    # ------------------------------------------------------------------ filter clauses

    def _unknown(self, sq: SearchQuery, name: str, message: str) -> None:
        if self.strict:
            raise CoreError(400, "not-supported", message, expression=[name])
        sq.issues.append(Issue("not-supported", message, severity="warning", expression=[name]))

    def _clause(self, res_type: str | None, res_types: list[str], name: str, value: str,
                sq: SearchQuery | None, depth: int = 0) -> Clause | None:
        if depth > MAX_CHAIN:
            raise _bad(f"{name}: chains may have at most {MAX_CHAIN} links", name)
        if name.startswith("_has:"):
            return self._has(res_type, res_types, name, value, sq, depth)
        head, dot, rest = name.partition(".")
        code, colon, modifier = head.partition(":")
        mod = modifier if colon else None
        if code in ("_id", "_lastUpdated", "_list"):
            if mod and not (mod == "missing" and code != "_list"):
                raise _bad(f"{name}: modifier :{mod} is not supported on {code}", name)
            return Clause(name, code, None, mod, split_values(value))
        types = [res_type] if res_type else res_types
        param = self._common_param(types, code)
        if param is None:
            if sq is None:
                raise _bad(f"unknown search parameter {code!r} for {', '.join(types)}", name)
            self._unknown(sq, name, f"unknown search parameter {code!r} for "
                          f"{', '.join(types)}; it was ignored")
            return None
        if dot:
            return self._chain(types, param, mod, rest, name, value, depth)
        if param.type == "special" or not param.indexed:
            if sq is None:
                raise _bad(f"search parameter {code!r} is not supported", name)
            self._unknown(sq, name, f"search parameter {code!r} ({param.type}) is not "
                          "supported; it was ignored")
            return None
        values = split_values(value)
        self._check(param, mod, values, name)
        return Clause(name, param.type, param, mod, values)

    def _check(self, param: SearchParam, mod: str | None, values: list[str], name: str) -> None:
        from sonobridge.core.validation import known_types

        if mod is not None:
            allowed = MODIFIERS.get(param.type, set())
            if param.type == "reference" and mod in known_types():
                if param.targets and mod not in param.targets and "Resource" not in param.targets:
                    raise _bad(f"{name}: {param.code} cannot point to {mod}", name)
            elif mod in UNSUPPORTED_MODIFIERS and param.type in ("token", "reference"):
                raise CoreError(400, "not-supported", f"{name}: modifier :{mod} needs a "
                                "terminology service and is not supported", expression=[name])
            elif mod not in allowed:
                raise _bad(f"{name}: unknown or unsupported modifier :{mod} for a {param.type} "
                           f"parameter (supported: {', '.join(sorted(allowed))})", name)
        if mod == "missing":
            if values not in (["true"], ["false"]):
                raise _bad(f"{name}: :missing takes true or false", name)
            return
        for value in values:
            if value == "":
                raise _bad(f"{name}: empty value", name)

    def _chain(self, types: list[str], param: SearchParam, mod: str | None, rest: str,
               name: str, value: str, depth: int) -> Clause:
        if param.type != "reference":
            raise _bad(f"{name}: cannot chain through {param.code!r}, a {param.type} parameter",
                       name)
        from sonobridge.core.validation import known_types

        if mod and mod not in known_types():
            raise _bad(f"{name}: :{mod} is not a resource type", name)
        targets = [mod] if mod else [t for t in param.targets if t in known_types()]
        if not targets:
            targets = list(known_types())
        next_code = rest.split(".")[0].split(":")[0]
        usable = [t for t in targets if next_code in ("_id", "_lastUpdated", "_has") or
                  next_code.startswith("_has") or self.registry.get(t, next_code) is not None]
        if not usable:
            raise _bad(f"{name}: none of {', '.join(targets[:8])} has a search parameter "
                       f"{next_code!r}", name)
        by_type = {t: self._clause(t, [t], rest, value, None, depth + 1) for t in usable}
        return Clause(name, "chain", param, mod, [], target_types=usable,
                      by_type={t: c for t, c in by_type.items() if c is not None})

    def _has(self, res_type: str | None, res_types: list[str], name: str, value: str,
             sq: SearchQuery | None, depth: int) -> Clause:
        from sonobridge.core.validation import known_types

        parts = name.split(":", 3)
        if len(parts) < 4:
            raise _bad(f"{name}: _has takes _has:Type:reference:parameter=value", name)
        _, source, ref_code, rest = parts
        if source not in known_types():
            raise _bad(f"{name}: unknown resource type {source!r}", name)
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise _bad(f"{name}: {ref_code!r} is not a reference parameter of {source}", name)
        inner = self._clause(source, [source], rest, value, None, depth + 1)
        return Clause(name, "has", ref, None, [], source_type=source, inner=inner)


def prefix_of(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2:
        return value[:2], value[2:]
    return "eq", value
