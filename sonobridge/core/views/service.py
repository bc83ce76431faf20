"""Views run over the store for a caller, and the ``ViewDefinition/$run`` operation.

Resources are read in batches by row id (keyset paging on the ``(res_type, deleted, rid)``
index), each batch in its own short read, so a run holds one batch in memory and never one
long transaction; the rows are produced as the batches are read. What the caller may read
bounds the batches in SQL: the same grant conditions the search engine applies (a
``patient/`` token's compartment, a query-restricted scope) are part of the batch query, so
rows come only from resources the token may read — nothing is read and then dropped.

``$run`` answers one document (the FHIR edge sends bytes); it stops with 413 past
``RESPONSE_MAX`` bytes, which ``_limit`` or ``sonobridge view run`` (no such bound: it writes
to a file) avoid. A stored view is a shipped one (``shipped.py``) or a ``Library`` whose
content is the ViewDefinition JSON (ViewDefinition is not an R4 resource type).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, and_, select

from sonobridge import jsonio
from sonobridge.core.access import grants_for, require
from sonobridge.core.errors import CoreError
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller
from sonobridge.core.search.dates import parse_period
from sonobridge.core.search.engine import R_ALIAS, Compartment, Grant, SearchEngine
from sonobridge.core.search.sql import clause_condition
from sonobridge.core.views.cache import Entry, RowCache
from sonobridge.core.views.definition import View, ViewError, compile_view
from sonobridge.core.views.fhirpath import reset_clock
from sonobridge.core.views.output import FORMATS, format_of, write
from sonobridge.core.views.runner import Row, rows
from sonobridge.core.views.shipped import SHIPPED
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import resource_versions as V

if TYPE_CHECKING:
    from sonobridge.core.services import Core

BATCH = 500
IDS_PAGE = 20_000  # row ids matched per query (the content is then read BATCH at a time)
# ... when search parameters narrow the query: each page evaluates their index subqueries
# again and walks what they matched from its start (measured on SQLite: every page of a
# year's reports cost about what the whole year did), so fewer, larger pages. A match is a
# (rid, version, 32-byte hash) tuple, ~150 bytes: a page holds ~30 MB at most.
NARROWED_PAGE = 200_000
RESPONSE_MAX = 64 * 1024 * 1024
RUN_DEFINITION = "http://sql-on-fhir.org/OperationDefinition/$run"
VIEW_CONTENT_TYPE = "application/json"
_RUN_PARAMS = frozenset({"viewResource", "viewReference", "patient", "_since", "_limit",
                         "_format", "resource", "header", "group", "source"})


@dataclass
class RunOptions:
    patient: str | None = None
    since: int | None = None  # microseconds, as ``last_updated`` is stored
    limit: int | None = None
    # FHIR search parameters that narrow the resources read (through the search index):
    # ``[("issued", "ge2026-11-01T00:00:00Z")]``; the view still decides the rows.
    query: tuple[tuple[str, str], ...] = ()
    # Only the resources with these ids (as ``_id`` would, but looked up by id: at most
    # ``IDS_PAGE`` of them).
    ids: tuple[str, ...] | None = None


class ViewService:
    """Runs compiled views over the store for a caller."""

    def __init__(self, store: ResourceStore, engine: SearchEngine) -> None:
        self.store = store
        self.engine = engine

    def resources(self, caller: Caller, res_type: str, options: RunOptions | None = None,
                  batch: int = BATCH) -> Iterator[dict[str, Any]]:
        """Every current resource of ``res_type`` the caller may read (and, with
        ``options.patient``, in that patient's compartment), in row order, batch by batch.

        Two steps: the row ids (and versions) that match are found first, ``IDS_PAGE`` at a
        time, then their content is read by id ``batch`` at a time. Reading content in the
        same query as the conditions made SQLite build the lists of the index subqueries (a
        period, a compartment) again for every batch of 500, so a month of reports cost as
        much in subqueries as in reading. A resource changed between the steps is left out
        (its matched version is no longer current): the content read is always the version
        the conditions matched."""
        for page in self._matched(caller, res_type, options or RunOptions()):
            for start in range(0, len(page), batch):
                wanted = {m.rid: m.version_id for m in page[start:start + batch]}
                for _, resource in self._read(wanted):
                    yield resource

    def _matched(self, caller: Caller, res_type: str, options: RunOptions
                 ) -> Iterator[list[Matched]]:
        """The matching rows' (rid, version, content hash), a page at a time, in rid order."""
        policy = caller.policy
        grants: list[Grant] | None = None
        if not policy.unrestricted:
            require(policy, res_type, "r")
            grants = grants_for(policy, res_type, "r")
        r = R_ALIAS
        clauses = self.engine.parser(strict=True).parse([res_type], list(options.query)
                                                         ).clauses if options.query else []
        if options.ids is not None:
            if len(options.ids) > IDS_PAGE:
                raise ValueError(f"at most {IDS_PAGE} ids at a time")
            if not options.ids:
                return
        size = NARROWED_PAGE if clauses else IDS_PAGE
        last = 0
        while True:
            with self.store.reader.connect() as conn:
                ctx = self.engine.context(caller.base, conn)
                where: list[ColumnElement[bool]] = [r.c.res_type == res_type]
                if options.ids is not None:
                    # By id: no ``deleted`` condition nor paging in SQL, which made SQLite
                    # (no statistics) walk every row of the type with the index on
                    # (res_type, deleted, rid) rather than look the ids up; deleted rows
                    # are dropped below.
                    where.append(r.c.res_id.in_(options.ids))
                else:
                    where += [r.c.deleted.is_(False), r.c.rid > last]
                if grants is not None:
                    where.append(self.engine.grant_condition(grants, [res_type], r, ctx))
                if options.patient is not None:
                    where.append(self.engine.grant_condition(
                        [Grant(Compartment("Patient", options.patient))], [res_type], r, ctx))
                if options.since is not None:
                    where.append(r.c.last_updated >= options.since)
                where.extend(clause_condition(c, res_type, r, ctx) for c in clauses)
                if options.ids is not None:
                    found = conn.execute(select(r.c.rid, r.c.version_id, r.c.content_hash,
                                                r.c.deleted).where(*where)).all()
                    page = sorted(Matched(row.rid, row.version_id, row.content_hash)
                                  for row in found if not row.deleted)
                else:
                    made = Matched._make  # from the row as a tuple: a year reads 400,000
                    page = [made(row) for row in
                            conn.execute(select(r.c.rid, r.c.version_id, r.c.content_hash)
                                         .where(*where).order_by(r.c.rid).limit(size)).all()]
            if page:
                yield page
            if options.ids is not None or len(page) < size:
                return
            last = page[-1].rid

    def _read(self, wanted: dict[int, int]) -> list[tuple[int, dict[str, Any]]]:
        """The content of these rows (rid -> the version matched), in rid order; a row no
        longer at that version (changed or deleted since) is left out."""
        if not wanted:
            return []
        r = R_ALIAS
        with self.store.reader.connect() as conn:
            found = conn.execute(
                select(r.c.rid, r.c.version_id, V.c.content)
                .select_from(r.join(V, and_(V.c.rid == r.c.rid,
                                            V.c.version_id == r.c.version_id)))
                .where(r.c.rid.in_(list(wanted)), r.c.deleted.is_(False))
                .order_by(r.c.rid)).all()
        return [(row.rid, jsonio.loads(row.content)) for row in found
                if row.content is not None and wanted.get(row.rid) == row.version_id]

    def run(self, caller: Caller, view: View, options: RunOptions | None = None,
            source: Iterable[dict[str, Any]] | None = None) -> Iterator[Row]:
        """The view's rows over the store (or over ``source`` resources when given)."""
        options = options or RunOptions()
        reset_clock()
        resources = source if source is not None else \
            self.resources(caller, view.resource, options)
        count = 0
        for resource in resources:
            for row in rows(view, resource):
                yield row
                count += 1
                if options.limit is not None and count >= options.limit:
                    return

    def run_cached(self, caller: Caller, view: View, view_key: str, cache: RowCache,
                   options: RunOptions | None = None, batch: int = BATCH) -> Iterator[Row]:
        """``run`` over the store, the rows of a resource whose content was seen before
        taken from ``cache`` (``core/views/cache.py``: only for a view whose rows depend on
        the resource alone, ``view_key`` naming it). The same rows, in the same order, as
        ``run``; only the resources not in the cache are read and evaluated."""
        options = options or RunOptions()
        reset_clock()
        columns = view.columns
        count = 0
        for page in self._matched(caller, view.resource, options):
            for start in range(0, len(page), batch):
                part = page[start:start + batch]
                hits: dict[int, Entry] = {
                    m.rid: entry for m, entry in zip(
                        part, cache.get_many(view_key, [m.content_hash for m in part]),
                        strict=True) if entry is not None}
                fresh = dict(self._read({m.rid: m.version_id for m in part
                                         if m.rid not in hits}))
                for m in part:
                    produced: list[Row]
                    if m.rid in hits:
                        produced = [{name: list(value) if isinstance(value, list) else value
                                     for name, value in zip(columns, values, strict=True)}
                                    for values in hits[m.rid]] if view.collections else \
                            [dict(zip(columns, values, strict=True)) for values in hits[m.rid]]
                    elif m.rid in fresh:
                        produced = list(rows(view, fresh[m.rid]))
                        if m.content_hash:
                            cache.put(view_key, m.content_hash, columns, produced,
                                      collections=bool(view.collections))
                    else:
                        continue  # changed or deleted since it matched
                    for row in produced:
                        yield row
                        count += 1
                        if options.limit is not None and count >= options.limit:
                            return


class Matched(NamedTuple):
    rid: int
    version_id: int
    content_hash: bytes | None


# ------------------------------------------------------------------------- $run

def _shipped_or_library(core: Core, caller: Caller, ref: str) -> dict[str, Any]:
    """A view by id, canonical or ``Library/id``: the shipped ones, then stored Libraries
    holding a ViewDefinition."""
    key = ref.rsplit("/", 1)[-1].split("|")[0]
    if key in SHIPPED and not ref.startswith("Library/"):
        return SHIPPED[key]
    stored = core.resources.read(caller, "Library", key)
    library = jsonio.loads(stored.content) if stored.content else {}
    for attachment in library.get("content", []):
        data = attachment.get("data")
        if data and str(attachment.get("contentType", "")).startswith(VIEW_CONTENT_TYPE):
            try:
                view: dict[str, Any] = jsonio.loads(base64.b64decode(data))
            except ValueError:
                break
            return view
    raise CoreError(422, "processing", f"Library/{key} holds no ViewDefinition (a content "
                    f"attachment of type {VIEW_CONTENT_TYPE})",
                    expression=["Library.content"])


def _int_param(call: OperationCall, name: str) -> int | None:
    value = call.param(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdecimal() and len(value) < 10:
        number = int(value)
    else:
        raise CoreError(400, "invalid", f"{name} is a positive integer", expression=[name])
    if number < 1:
        raise CoreError(400, "invalid", f"{name} is a positive integer", expression=[name])
    return number


def run_operation(core: Core, service: ViewService, call: OperationCall) -> OperationResult:
    for name in {k for k, _ in call.query} | {p.get("name") for p in call.parameters}:
        if name not in _RUN_PARAMS:
            raise CoreError(400, "not-supported", f"$run does not take {name!r}",
                            expression=[str(name)])
    if call.param("group") is not None:
        raise CoreError(400, "not-supported", "$run: group is not supported; use patient",
                        expression=["group"])
    if call.param("source") is not None:
        raise CoreError(400, "not-supported", "$run: source is not supported (views run "
                        "over this server's store)", expression=["source"])
    if call.level == "instance":
        body = _shipped_or_library(core, call.caller, call.res_id or "")
    else:
        body = call.param("viewResource")
        reference = call.param("viewReference")
        if body is None and reference is not None:
            ref = reference.get("reference") if isinstance(reference, dict) else reference
            body = _shipped_or_library(core, call.caller, str(ref))
        if body is None:
            raise CoreError(400, "required", "$run needs the view: viewResource (a "
                            "ViewDefinition) or viewReference", expression=["viewResource"])
    inline_view = call.level != "instance" and call.param("viewResource") is not None
    try:
        view = compile_view(body)
    except ViewError as exc:
        raise _located(exc, inline_view) from None
    fmt = format_of(call.param("_format"), "json")
    options = RunOptions(limit=_int_param(call, "_limit"))
    patient = call.param("patient")
    if patient is not None:
        ref = patient.get("reference") if isinstance(patient, dict) else patient
        options.patient = str(ref).removeprefix("Patient/")
    since = call.param("_since")
    if since is not None:
        options.since = parse_period(str(since), "_since")[0]
    inline = call.params("resource")
    source = [r for r in inline if isinstance(r, dict)] if inline else None
    sink = _Bounded(RESPONSE_MAX)
    header = str(call.param("header", "true")).lower() != "false"
    try:
        write(fmt, view.columns, service.run(call.caller, view, options, source), sink,
              view.types, view.collections, header=header)
    except ViewError as exc:
        raise _located(exc, inline_view) from None
    return OperationResult(sink.getvalue(), content_type=FORMATS[fmt])


def _located(exc: ViewError, inline: bool) -> ViewError:
    """A view given in the Parameters body is pointed at there (the client's document)."""
    if inline:
        for issue in exc.issues:
            issue.expression = [f"Parameters.parameter('viewResource').resource."
                                f"{p.removeprefix('ViewDefinition.')}"
                                for p in issue.expression]
    return exc


class _Bounded(io.BytesIO):
    """A response buffer that refuses to grow past ``limit`` (413, with what to do)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise CoreError(413, "too-costly", f"the view's output passes {self.limit:,} bytes;"
                            " narrow it (_limit, patient, _since) or run it with "
                            "`sonobridge view run`, which writes to a file")
        return super().write(data)


def attach(core: Core) -> None:
    service = ViewService(core.store, core.search)
    core.operations.register(Operation(
        "run", frozenset({"type", "instance"}), lambda call: run_operation(core, service, call),
        types=frozenset({"ViewDefinition"}), definition=RUN_DEFINITION,
        documentation="SQL on FHIR v2: a ViewDefinition's rows as json, ndjson, csv or parquet "
                      "(_format in the Parameters body), rows only from resources the caller "
                      "may read."))
