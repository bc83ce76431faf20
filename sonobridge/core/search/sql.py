"""Search clauses to SQL conditions on the resources table and the ``idx_*`` tables.

Every condition is a predicate on an alias of ``resources`` (``r``): ``r.rid IN (SELECT rid
FROM idx_… WHERE …)``. Chains and reverse chains nest the same builder on another alias, so any
depth is one statement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    literal,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.sql.selectable import NamedFromClause

from sonobridge.core.errors import CoreError
from sonobridge.core.search.dates import parse_period
from sonobridge.core.search.extract import parse_reference
from sonobridge.core.search.params import Clause, prefix_of, split_values, unescape
from sonobridge.core.search.registry import SearchParam
from sonobridge.store.normalize import MAX_INDEXED, normalize, prefix_upper_bound
from sonobridge.store.tables import INDEX_TABLES, idx_reference
from sonobridge.store.tables import resources as R

TABLE = {"string": "idx_string", "token": "idx_token", "reference": "idx_reference",
         "date": "idx_date", "number": "idx_number", "quantity": "idx_quantity",
         "uri": "idx_uri"}


class Aliases:
    """Table aliases for one statement, taken from a shared pool.

    Building a fresh alias costs more than the rest of a simple search (SQLAlchemy builds its
    column collection on first use). Aliases are immutable, so every statement can reuse the
    same ``idx_token_0``, ``idx_token_1``…; each statement only needs distinct ones.
    """

    _pool: ClassVar[dict[str, list[NamedFromClause]]] = {}
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def get(self, table: NamedFromClause) -> NamedFromClause:
        index = self._used.get(table.name, 0)
        self._used[table.name] = index + 1
        pool = self._pool.get(table.name)
        if pool is None or len(pool) <= index:
            with self._lock:
                pool = self._pool.setdefault(table.name, [])
                while len(pool) <= index:
                    alias = table.alias(f"{table.name}_{len(pool)}")
                    _ = alias.c  # build the column collection once
                    pool.append(alias)
        return pool[index]


# (resource type, the alias rows of that type are read through, context) -> what the caller
# may see of them, or ``None`` when it may see all: the access policy, applied wherever a
# search looks at resources (the matches, and the targets of chains, _has and _list), so that
# no condition is evaluated over what the caller may not read.
Restrict = Callable[[str, NamedFromClause, "SqlContext"], ColumnElement[bool] | None]


@dataclass
class SqlContext:
    base: str
    valueset: Callable[[str], list[tuple[str | None, str | None]]]
    component: Callable[[str], SearchParam | None]
    now_us: int = 0
    aliases: Aliases = field(default_factory=Aliases)
    restrict: Restrict | None = None
    # The composite whose first-component rows answer another's :missing (Registry).
    leader: Callable[[SearchParam], SearchParam | None] = lambda param: None

    def visible(self, res_type: str, alias: NamedFromClause) -> list[ColumnElement[bool]]:
        """The caller's restriction on ``res_type`` rows read through ``alias`` (none when it
        may see them all), built without restriction of its own (a filter of the policy is
        the caller's own grant, not a question it asks)."""
        if self.restrict is None:
            return []
        plain = SqlContext(self.base, self.valueset, self.component, self.now_us,
                           self.aliases, None, self.leader)
        found = self.restrict(res_type, alias, plain)
        return [] if found is None else [found]

    def __post_init__(self) -> None:
        self.now_us = self.now_us or time.time_ns() // 1000

    def alias(self, table: NamedFromClause) -> NamedFromClause:
        return self.aliases.get(table)


def _bad(message: str, name: str) -> CoreError:
    return CoreError(400, "invalid", message, expression=[name])


def _type_filter(table: NamedFromClause, res_type: str | None) -> ColumnElement[bool]:
    return true() if res_type is None else table.c.res_type == res_type


@dataclass
class Condition:
    """A clause as SQL, in a form the planner can use two ways.

    A simple clause keeps its row source (``rows``: the matching rids of one index table), so the
    query can either start from it (``r.rid IN (rows)``, best when it matches few resources) or
    test each candidate (``EXISTS (rows WHERE rid = r.rid)``, best when it matches many and a
    page is short). Other clauses are a fixed predicate. ``selective`` marks predicates that
    usually match few resources (ids, chains, reverse chains, compartments).
    """

    predicate: ColumnElement[bool] | None = None
    rows: Select[Any] | None = None
    table: NamedFromClause | None = None
    # The row filters without the type (for the probe's index).
    filters: tuple[ColumnElement[bool], ...] = ()
    negate: bool = False
    selective: bool = False
    likely_rank: int = 9  # lower: more likely to match few resources (estimated first)

    def as_in(self, r: NamedFromClause) -> ColumnElement[bool]:
        if self.rows is None:
            assert self.predicate is not None
            return self.predicate
        if self.negate:
            return self.as_exists(r)
        return r.c.rid.in_(self.rows)

    def as_exists(self, r: NamedFromClause) -> ColumnElement[bool]:
        if self.rows is None:
            assert self.predicate is not None
            return self.predicate
        assert self.table is not None, "a condition with rows has their table"
        # No type filter here: the probe must use the (rid, param) index, not a value index.
        found = exists().where(self.table.c.rid == r.c.rid, *self.filters)
        return not_(found) if self.negate else found

    @property
    def estimable(self) -> bool:
        return self.rows is not None and not self.negate


def clause_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                     ) -> ColumnElement[bool]:
    """The clause as one predicate (inside chains and reverse chains)."""
    return build_condition(clause, res_type, r, ctx).as_in(r)


def build_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                    ) -> Condition:
    kind = clause.kind
    if kind in ("_id", "chain", "has", "_list"):
        return Condition(_special(clause, res_type, r, ctx),
                         selective=clause.modifier != "missing")
    if kind == "_lastUpdated" or (kind == "composite" and clause.modifier != "missing"):
        return Condition(_special(clause, res_type, r, ctx))
    param = clause.param
    assert param is not None
    table = None if kind == "composite" else ctx.alias(INDEX_TABLES[TABLE[kind]])
    if clause.modifier == "missing":
        return Condition(_missing(clause, r, table, ctx))
    assert table is not None
    code = param.code
    if clause.modifier == "of-type":
        code = f"{code}:of-type"
    negate = clause.modifier in ("not", "not-in")
    modifier = {"not": None, "not-in": "in"}.get(clause.modifier or "", clause.modifier)
    matches = [value_match(kind, table, v, modifier, clause.name, ctx) for v in clause.values]
    filters: tuple[ColumnElement[bool], ...] = (table.c.param == code, or_(*matches))
    if kind == "quantity":  # the value index holds plain rows only (store/tables.py)
        filters = (*filters, table.c.grp.is_(None))
    rows = select(table.c.rid).where(_type_filter(table, res_type), *filters)
    # A business identifier names one thing: no need to count its matches first.
    identifies = kind == "token" and param.code == "identifier" and not modifier and \
        all("|" in v and not v.endswith("|") for v in clause.values)
    return Condition(rows=rows, table=table, filters=filters, negate=negate,
                     likely_rank=_LIKELY.get(kind, 9), selective=identifies and not negate)


# Equality on identifiers and references usually narrows most; ranges narrow least.
_LIKELY = {"reference": 0, "token": 1, "uri": 1, "string": 2, "number": 5, "quantity": 5,
           "date": 6}


def _special(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
             ) -> ColumnElement[bool]:
    kind = clause.kind
    if kind == "_id":
        if clause.modifier == "missing":
            return false() if clause.values == ["true"] else true()
        return r.c.res_id.in_([unescape(v) for v in clause.values])
    if kind == "_lastUpdated":
        if clause.modifier == "missing":
            return false() if clause.values == ["true"] else true()
        return or_(*(_date_match(r.c.last_updated, r.c.last_updated + 1, v, clause.name, ctx)
                     for v in clause.values))
    if kind == "_list":
        return _list_condition(clause, res_type, r, ctx)
    if kind == "chain":
        return _chain_condition(clause, res_type, r, ctx)
    if kind == "has":
        return _has_condition(clause, res_type, r, ctx)
    return _composite_condition(clause, res_type, r, ctx)


def _missing(clause: Clause, r: NamedFromClause, table: NamedFromClause | None,
             ctx: SqlContext) -> ColumnElement[bool]:
    param = clause.param
    assert param is not None
    code = param.code
    if table is None:  # a composite is present when its first component is
        component = ctx.component(param.components[0][0]) if param.components else None
        if component is None or component.type not in TABLE:
            raise CoreError(400, "not-supported", f"{clause.name}: not supported",
                            expression=[clause.name])
        table = ctx.alias(INDEX_TABLES[TABLE[component.type]])
        leader = ctx.leader(param)  # whose first component is this one's, for every group
        code = f"{(leader or param).code}$0"
    present = exists().where(table.c.rid == r.c.rid, table.c.param == code)
    return not_(present) if clause.values == ["true"] else present


# ------------------------------------------------------------------------------ value matching

def value_match(kind: str, table: NamedFromClause, value: str, modifier: str | None, name: str,
                ctx: SqlContext) -> ColumnElement[bool]:
    if kind == "string":
        return _string_match(table, value, modifier)
    if kind == "token":
        return _token_match(table, value, modifier, name, ctx)
    if kind == "reference":
        return _reference_match(table, value, modifier, name, ctx)
    if kind == "date":
        return _date_match(table.c.low, table.c.high, value, name, ctx)
    if kind == "number":
        return _number_match(table.c.value, value, name)
    if kind == "quantity":
        return _quantity_match(table, value, name)
    if kind == "uri":
        return _uri_match(table, value, modifier)
    raise _bad(f"{name}: unsupported parameter type {kind}", name)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string_match(table: NamedFromClause, value: str, modifier: str | None) -> ColumnElement[bool]:
    raw = unescape(value)
    if modifier == "exact":
        return table.c.exact == raw[:MAX_INDEXED]
    norm = normalize(raw)[:MAX_INDEXED]
    if modifier == "contains":
        return table.c.value.like(f"%{_like_escape(norm)}%", escape="\\")
    return and_(table.c.value >= norm, table.c.value < prefix_upper_bound(norm))


def _split_system(value: str) -> tuple[str | None, str]:
    parts = split_values(value, "|")
    if len(parts) == 1:
        return None, unescape(parts[0])
    return unescape(parts[0]), unescape("|".join(parts[1:]))


def _token_match(table: NamedFromClause, value: str, modifier: str | None, name: str,
                 ctx: SqlContext) -> ColumnElement[bool]:
    if modifier == "text":
        norm = normalize(unescape(value))[:MAX_INDEXED]
        return and_(table.c.text >= norm, table.c.text < prefix_upper_bound(norm))
    if modifier == "of-type":
        parts = split_values(value, "|")
        if len(parts) != 3:
            raise _bad(f"{name}: :of-type takes system|code|value", name)
        return table.c.code == "|".join(unescape(p) for p in parts)[:MAX_INDEXED]
    if modifier in ("in", "not-in"):
        concepts = ctx.valueset(unescape(value))
        if not concepts:
            return false()
        return or_(*(_system_code(table, system, code) for system, code in concepts))
    if "|" not in value.replace("\\|", ""):
        return table.c.code == unescape(value)
    system, code = _split_system(value)
    if system == "":
        return and_(table.c.system.is_(None), table.c.code == code)
    if code == "":
        return table.c.system == system
    return _system_code(table, system, code)


def _system_code(table: NamedFromClause, system: str | None, code: str | None
                 ) -> ColumnElement[bool]:
    conds = []
    if system:
        conds.append(table.c.system == system)
    if code:
        conds.append(table.c.code == code)
    return and_(*conds) if conds else false()


def _reference_match(table: NamedFromClause, value: str, modifier: str | None, name: str,
                     ctx: SqlContext) -> ColumnElement[bool]:
    raw = unescape(value)
    if modifier == "identifier":
        system, ident = _split_system(value)
        conds = [table.c.ident_value == ident] if ident else []
        if system:
            conds.append(table.c.ident_system == system)
        elif system == "":
            conds.append(table.c.ident_system.is_(None))
        return and_(*conds) if conds else false()
    if modifier:  # :[type]
        return and_(table.c.target_type == modifier,
                    table.c.target_id == raw.split("/")[-1])
    base = ctx.base.rstrip("/") + "/"
    if raw.startswith(base):
        raw = raw[len(base):]
    if "://" in raw or raw.startswith("urn:"):
        return table.c.url == raw.split("|")[0]
    target_type, target_id, _ = parse_reference(raw)
    if target_type is not None:
        local = or_(table.c.url.is_(None), table.c.url == f"{base}{target_type}/{target_id}")
        return and_(table.c.target_type == target_type, table.c.target_id == target_id, local)
    return table.c.target_id == raw


def _date_match(low: ColumnElement[Any], high: ColumnElement[Any], value: str, name: str,
                ctx: SqlContext) -> ColumnElement[bool]:
    prefix, text = prefix_of(value)
    vlo, vhi = parse_period(text, name, require_tz=False)
    contained = and_(low >= vlo, high <= vhi)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > vhi
    if prefix == "lt":
        return low < vlo
    # ge/le: "the range above (below) the value overlaps the target, or the value contains it",
    # written with one bound first so that an index on it can drive the match.
    if prefix == "ge":
        return and_(high > vlo, or_(high > vhi, low >= vlo))
    if prefix == "le":
        return and_(low < vhi, or_(low < vlo, high <= vhi))
    if prefix == "sa":
        return low >= vhi
    if prefix == "eb":
        return high <= vlo
    delta = abs(ctx.now_us - vlo) // 10  # ap: within 10% of the distance from now
    return and_(low < vhi + delta, high > vlo - delta)


def _decimal(text: str, name: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise _bad(f"{name}: {text!r} is not a number", name) from None
    if not number.is_finite():
        raise _bad(f"{name}: {text!r} is not a finite number", name)
    return number


def _number_match(column: ColumnElement[Any], value: str, name: str) -> ColumnElement[bool]:
    prefix, text = prefix_of(value)
    number = _decimal(text, name)
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(exponent - 1) if isinstance(exponent, int) else Decimal("0.5")
    low, high, v = float(number - half), float(number + half), float(number)
    if low == high:  # beyond a float's precision: the value itself
        low, high = v, v
    if prefix == "eq":
        return and_(column >= low, column < high) if low < high else column == v
    if prefix == "ne":
        return or_(column < low, column >= high) if low < high else column != v
    if prefix in ("gt", "sa"):
        return column > v
    if prefix in ("lt", "eb"):
        return column < v
    if prefix == "ge":
        return column >= v
    if prefix == "le":
        return column <= v
    margin = abs(v) * 0.1
    return and_(column >= v - margin, column <= v + margin)


def _quantity_match(table: NamedFromClause, value: str, name: str) -> ColumnElement[bool]:
    parts = split_values(value, "|")
    number_part = parts[0]
    system = unescape(parts[1]) if len(parts) > 1 else ""
    code = unescape(parts[2]) if len(parts) > 2 else ""
    if len(parts) == 2:
        raise _bad(f"{name}: a quantity is number|system|code or number||code", name)
    single = _number_match(table.c.value, number_part, name)
    prefix, text = prefix_of(number_part)
    number = float(_decimal(text, name))
    in_range = and_(table.c.value.is_(None), table.c.low <= number, table.c.high >= number) \
        if prefix == "eq" else false()
    conds = [or_(single, in_range)]
    if code:
        conds.append(or_(table.c.code == code, table.c.unit == code))
    if system:
        conds.append(table.c.system == system)
    return and_(*conds)


def _uri_match(table: NamedFromClause, value: str, modifier: str | None) -> ColumnElement[bool]:
    raw = unescape(value)
    if modifier == "below":
        return table.c.uri.like(f"{_like_escape(raw)}%", escape="\\")
    if modifier == "above":
        return literal(raw).startswith(table.c.uri)
    return table.c.uri == raw


# ------------------------------------------------------------------------------ special kinds

def _chain_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                     ) -> ColumnElement[bool]:
    assert clause.param is not None
    subqueries = []
    for target_type, inner in clause.by_type.items():
        ref = ctx.alias(idx_reference)
        target = ctx.alias(R)
        # Targets first (usually few), then the references to them, through the
        # (res_type, param, target_type, target_id) index.
        targets = select(target.c.res_id).where(
            target.c.res_type == target_type, target.c.deleted.is_(False),
            clause_condition(inner, target_type, target, ctx),
            *ctx.visible(target_type, target))
        subqueries.append(select(ref.c.rid).where(
            _type_filter(ref, res_type), ref.c.param == clause.param.code,
            ref.c.target_type == target_type, ref.c.target_id.in_(targets)))
    if not subqueries:
        return false()
    # One IN over a UNION (not an OR of INs), so the database can start from it.
    return r.c.rid.in_(subqueries[0] if len(subqueries) == 1 else union_all(*subqueries))


def _has_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                   ) -> ColumnElement[bool]:
    assert clause.param is not None and clause.inner is not None
    ref = ctx.alias(idx_reference)
    source = ctx.alias(R)
    sub = (select(ref.c.target_id)
           .join(source, source.c.rid == ref.c.rid)
           .where(ref.c.res_type == clause.source_type, ref.c.param == clause.param.code,
                  ref.c.target_type == (res_type if res_type else r.c.res_type),
                  source.c.deleted.is_(False),
                  clause_condition(clause.inner, clause.source_type, source, ctx),
                  *(ctx.visible(clause.source_type, source) if clause.source_type else [])))
    return r.c.res_id.in_(sub)


def _list_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                    ) -> ColumnElement[bool]:
    ref = ctx.alias(idx_reference)
    lst = ctx.alias(R)
    ids = [unescape(v) for v in clause.values]
    sub = (select(ref.c.target_id)
           .join(lst, lst.c.rid == ref.c.rid)
           .where(lst.c.res_type == "List", lst.c.res_id.in_(ids), lst.c.deleted.is_(False),
                  ref.c.param == "item",
                  ref.c.target_type == (res_type if res_type else r.c.res_type),
                  *ctx.visible("List", lst)))
    return r.c.res_id.in_(sub)


def _composite_condition(clause: Clause, res_type: str | None, r: NamedFromClause, ctx: SqlContext
                         ) -> ColumnElement[bool]:
    param = clause.param
    assert param is not None
    found = [ctx.component(url) for url, _ in param.components]
    components = [c for c in found if c is not None]
    if len(components) != len(found):
        raise CoreError(400, "not-supported", f"{clause.name}: composite not supported",
                        expression=[clause.name])
    options = []
    for value in clause.values:
        parts = split_values(value, "$")
        if len(parts) != len(components):
            raise _bad(f"{clause.name}: expected {len(components)} values joined by $", clause.name)
        aliases = [ctx.alias(INDEX_TABLES[TABLE[c.type]]) for c in components]
        first = aliases[0]
        stmt = select(first.c.rid).where(
            _type_filter(first, res_type), first.c.param == f"{param.code}$0",
            value_match(components[0].type, first, parts[0], None, clause.name, ctx))
        for i, (alias, component) in enumerate(zip(aliases[1:], components[1:], strict=True), 1):
            stmt = stmt.join(alias, and_(alias.c.rid == first.c.rid, alias.c.grp == first.c.grp))
            stmt = stmt.where(alias.c.param == f"{param.code}${i}",
                              value_match(component.type, alias, parts[i], None, clause.name,
                                          ctx))
        options.append(r.c.rid.in_(stmt))
    return or_(*options)
