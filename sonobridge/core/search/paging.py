"""One page of search results, addressed by keyset (the sort keys of a row), never by offset.

Two ways to produce a page:

- ``simple``: filter, order by the sort keys (outer joins to the index rows that hold them) and
  cut ``_count + 1`` rows. Right when a selective clause drives the query: few candidates.
- ``sort-driven``: when every clause matches many resources and the search is sorted, start from
  the index of the first sort key, already in order, and test each candidate: the page fills
  after a few dozen probes instead of sorting every match. Resources without a value for that
  key follow, as a second segment (missing values sort last, either direction).

Only the rows of the page then fetch their JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Executable,
    FromClause,
    Result,
    and_,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.selectable import NamedFromClause

from sonobridge.core.errors import CoreError
from sonobridge.core.search.extract import DATE_MAX, DATE_MIN
from sonobridge.core.search.registry import SORT_COLUMNS
from sonobridge.core.search.sql import TABLE, SqlContext
from sonobridge.store.tables import INDEX_TABLES
from sonobridge.store.tables import resource_versions as V

if TYPE_CHECKING:
    from sonobridge.core.search.params import SearchQuery
    from sonobridge.core.search.registry import SearchParam

# A clause matching fewer resources than this drives the query (IN); otherwise it is a probe.
# Counting up to it costs about a microsecond per row, so it stays small: past a few hundred
# matches, probing page candidates in order fills a page of 20 as fast as an IN list would.
SELECTIVE = 500
_STR_MAX, _STR_MIN = "\U0010ffff", ""
_NUM_MAX, _NUM_MIN = 1e308, -1e308


# Runs one statement of a search on its connection (and counts it).
Run = Callable[[Executable], Result[*tuple[Any, ...]]]


class ResourceRow(Protocol):
    """A resource a search found: its row id, type, id and JSON."""

    @property
    def rid(self) -> int: ...
    @property
    def res_type(self) -> str: ...
    @property
    def res_id(self) -> str: ...
    @property
    def content(self) -> bytes: ...


class PageRow(ResourceRow, Protocol):
    """A row of a page: also its segment (1: the first sort key is missing) and, as ``k0``,
    ``k1``…, its sort keys."""

    @property
    def seg(self) -> int: ...


# A sort key expression, and whether it sorts descending.
SortKey = tuple[ColumnElement[Any], bool]
# An outer join a sort key needs: the index table alias and the join condition.
Join = tuple[NamedFromClause, ColumnElement[bool]]


class _Row(NamedTuple):
    rid: int
    res_type: str
    res_id: str
    content: bytes
    seg: int
    k0: Any


@dataclass
class Plan:
    where: ColumnElement[bool]
    dense: bool  # no clause narrows the candidates much


@dataclass
class Page:
    rows: list[PageRow]
    keys: list[list[Any]]
    segments: list[int]
    more: bool  # another page exists in the direction read
    backward: bool


def sentinel(param_type: str, desc: bool) -> int | float | str:
    """A value that sorts after every real one, so missing values come last."""
    if param_type == "date":
        return DATE_MIN if desc else DATE_MAX
    if param_type in ("number", "quantity"):
        return _NUM_MIN if desc else _NUM_MAX
    return _STR_MIN if desc else _STR_MAX


def after(keys: list[SortKey], values: list[Any], rid_col: ColumnElement[int], rid: int,
          forward: bool) -> ColumnElement[bool]:
    """Rows strictly after (forward) or before the given position in display order."""
    if len(values) != len(keys):
        raise CoreError(400, "invalid", "this page link does not belong to this search",
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


class Pager:
    def __init__(self, run: Run, sq: SearchQuery, r: NamedFromClause, plan: Plan,
                 cursor: dict[str, Any] | None, ctx: SqlContext) -> None:
        self.run = run
        self.ctx = ctx
        self.sq = sq
        self.r = r
        self.plan = plan
        self.cursor = cursor
        self.backward = bool(cursor and cursor.get("p"))

    def page(self) -> Page:
        first = self.sq.sort[0] if self.sq.sort else None
        if self.plan.dense and first is not None and first[1] is not None:
            return self._sort_driven()
        keys, joins = self._keys(self.sq.sort)
        rows = self._query(0, keys, joins, [], self._position(len(keys)), self.sq.count + 1)
        return self._finish(rows)

    # ------------------------------------------------------------------------ the two methods

    def _sort_driven(self) -> Page:
        limit = self.sq.count + 1
        segment = int(self.cursor.get("s", 0)) if self.cursor else 0
        code, param, desc = self.sq.sort[0]
        assert param is not None
        holder = self.ctx.alias(INDEX_TABLES[TABLE[param.type]])
        column = holder.c[SORT_COLUMNS[param.type][1 if desc else 0]]
        others, joins = self._keys(self.sq.sort[1:])
        has_value = [holder.c.param == code, holder.c.sort.in_((2, 3) if desc else (1, 3))]
        if len(self.sq.res_types) == 1:
            has_value.append(holder.c.res_type == self.sq.res_types[0])
        if param.type == "quantity":  # its value index holds plain rows only (store/tables.py)
            has_value.append(holder.c.grp.is_(None))
        lacks_holder = self.ctx.alias(INDEX_TABLES[TABLE[param.type]])
        lacks_value = [not_(exists().where(lacks_holder.c.rid == self.r.c.rid,
                                           lacks_holder.c.param == code))]
        with_keys = [(column, desc), *others]

        def first_segment(position: tuple[list[Any], int] | None, count: int
                          ) -> list[PageRow]:
            if not others:
                return self._walk(holder, column, desc, has_value, position, count)
            source = holder.join(self.r, self.r.c.rid == holder.c.rid)
            return self._query(0, with_keys, joins, has_value, position, count, source)

        def second_segment(position: tuple[list[Any], int] | None, count: int
                           ) -> list[PageRow]:
            return self._query(1, others, joins, lacks_value, position, count)

        if not self.backward:
            if segment == 0:
                rows = first_segment(self._position(len(with_keys)), limit)
                if len(rows) < limit:
                    rows += second_segment(None, limit - len(rows))
            else:
                rows = second_segment(self._position(len(others), skip=1), limit)
        else:
            if segment == 1:
                rows = second_segment(self._position(len(others), skip=1), limit)
                if len(rows) < limit:
                    rows += first_segment(None, limit - len(rows))
            else:
                rows = first_segment(self._position(len(with_keys)), limit)
        return self._finish(rows)

    def _walk(self, holder: NamedFromClause, column: ColumnElement[Any], desc: bool,
              has_value: list[ColumnElement[bool]], position: tuple[list[Any], int] | None,
              count: int) -> list[PageRow]:
        """Walk the sort key's index in order, a batch at a time, keeping the candidates that
        match: the plan both databases should find, spelled out so that neither has to guess
        (PostgreSQL's estimates for several probes on one index table are far too low)."""
        forward = not self.backward
        ascending = (not desc) == forward
        order = [column.asc() if ascending else column.desc(),
                 holder.c.rid.asc() if forward else holder.c.rid.desc()]
        found: list[tuple[int, Any]] = []
        batch = max(4 * count, 64)
        while len(found) < count:
            stmt = select(holder.c.rid, column.label("k")).where(*has_value)
            if position is not None:
                stmt = stmt.where(after([(column, desc)], position[0], holder.c.rid,
                                        position[1], forward))
            candidates = self.run(stmt.order_by(*order).limit(batch)).all()
            if not candidates:
                break
            keep = {row.rid for row in self.run(select(self.r.c.rid).where(
                self.r.c.rid.in_([c.rid for c in candidates]), self.plan.where)).all()}
            for candidate in candidates:
                if candidate.rid in keep:
                    found.append((candidate.rid, candidate.k))
                    if len(found) == count:
                        break
            if len(candidates) < batch:
                break
            position = ([candidates[-1].k], candidates[-1].rid)
            batch = min(batch * 4, 20_000)
        if not found:
            return []
        r = self.r
        rows = self.run(select(r.c.rid, r.c.res_type, r.c.res_id, V.c.content).select_from(
            r.join(V, and_(V.c.rid == r.c.rid, V.c.version_id == r.c.version_id))).where(
            r.c.rid.in_([rid for rid, _ in found]))).all()
        by_rid = {row.rid: row for row in rows}
        return [_Row(rid, by_rid[rid].res_type, by_rid[rid].res_id, by_rid[rid].content, 0, key)
                for rid, key in found if rid in by_rid]

    # ------------------------------------------------------------------------ helpers

    def _keys(self, sort: list[tuple[str, SearchParam | None, bool]]
              ) -> tuple[list[SortKey], list[Join]]:
        """(key expression, descending) per sort key, and the outer joins they need."""
        keys: list[SortKey] = []
        joins: list[Join] = []
        r = self.r
        for code, param, desc in sort:
            if code == "_id":
                keys.append((r.c.res_id, desc))
            elif code == "_lastUpdated":
                keys.append((r.c.last_updated, desc))
            else:
                assert param is not None, "the parser gives every other sort key its parameter"
                table = self.ctx.alias(INDEX_TABLES[TABLE[param.type]])
                column = table.c[SORT_COLUMNS[param.type][1 if desc else 0]]
                joins.append((table, and_(table.c.rid == r.c.rid, table.c.param == code,
                                          table.c.sort.in_((2, 3) if desc else (1, 3)))))
                keys.append((func.coalesce(column, sentinel(param.type, desc)), desc))
        return keys, joins

    def _position(self, count: int, skip: int = 0) -> tuple[list[Any], int] | None:
        if self.cursor is None:
            return None
        values = list(self.cursor["k"])[skip:]
        if len(values) != count:
            raise CoreError(400, "invalid", "this page link does not belong to this search",
                            expression=["_page"])
        return values, self.cursor["r"]

    def _query(self, segment: int, keys: list[SortKey], joins: list[Join],
               extra: list[ColumnElement[bool]], position: tuple[list[Any], int] | None,
               limit: int, source: FromClause | None = None) -> list[PageRow]:
        r = self.r
        joined: FromClause = r if source is None else source
        for table, on in joins:
            joined = joined.outerjoin(table, on)
        labels = [f"k{i}" for i in range(len(keys))]
        inner = select(r.c.rid, r.c.res_type, r.c.res_id, r.c.version_id,
                       *(k.label(label) for (k, _), label in zip(keys, labels, strict=True))
                       ).select_from(joined).where(self.plan.where, *extra)
        if position is not None:
            inner = inner.where(after(keys, position[0], r.c.rid, position[1],
                                      not self.backward))
        ups = [(not desc) != self.backward for _, desc in keys]
        order = [k.asc() if up else k.desc() for (k, _), up in zip(keys, ups, strict=True)]
        order.append(r.c.rid.desc() if self.backward else r.c.rid.asc())
        page = inner.order_by(*order).limit(limit).subquery("page")
        outer = [page.c[label].asc() if up else page.c[label].desc()
                 for label, up in zip(labels, ups, strict=True)]
        outer.append(page.c.rid.desc() if self.backward else page.c.rid.asc())
        stmt = (select(page.c.rid, page.c.res_type, page.c.res_id, V.c.content,
                       literal(segment).label("seg"), *(page.c[label] for label in labels))
                .select_from(page.join(V, and_(V.c.rid == page.c.rid,
                                               V.c.version_id == page.c.version_id)))
                .order_by(*outer))
        return list(self.run(stmt).all())

    def _finish(self, rows: list[PageRow]) -> Page:
        more = len(rows) > self.sq.count
        rows = rows[:self.sq.count]
        if self.backward:
            rows.reverse()
        width = len(self.sq.sort)
        keys = []
        for row in rows:
            values = [getattr(row, f"k{i}", None) for i in range(width)]
            if row.seg == 1:  # the first key is missing: others are shifted by one
                values = [None, *[getattr(row, f"k{i}", None) for i in range(width - 1)]]
            keys.append(values)
        return Page(rows, keys, [row.seg for row in rows], more, self.backward)
