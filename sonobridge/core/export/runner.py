"""Writing an export job's NDJSON files: one type at a time, batch by batch.

Resources are read by row id (keyset paging on the ``(res_type, deleted, rid)`` index), each
batch in its own short read, and written as the stored JSON bytes plus a newline: memory holds
one batch, whatever the size of the export, and no resource is parsed unless ``_elements``
asks for a subset. What the caller may read is part of each batch's SQL (the same grant
conditions a search applies), as are the patients a Group or Patient export is confined to,
``_since``, and the ``_typeFilter`` searches (alternatives, OR'ed). Resources changed after the
job's transaction time are left out (the next export with ``_since`` picks them up).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import ColumnElement, and_, literal, or_, select, true
from sqlalchemy.sql.selectable import NamedFromClause

from sonobridge import jsonio
from sonobridge.core.access import grants_for
from sonobridge.core.export.jobs import Output
from sonobridge.core.export.params import ExportRequest
from sonobridge.core.policy import Caller
from sonobridge.core.search.engine import R_ALIAS, SearchEngine
from sonobridge.core.search.sql import SqlContext, clause_condition
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import idx_reference
from sonobridge.store.tables import resource_versions as V

BATCH = 1000
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


class Cancelled(Exception):
    """The job was cancelled (DELETE) or taken over by another process while it ran."""


def _patients_condition(engine: SearchEngine, res_type: str, r: NamedFromClause,
                        ctx: SqlContext, ids: list[str] | None) -> ColumnElement[bool]:
    """Resources in the compartment of any of ``ids`` (of any patient when ``None``)."""
    if res_type == "Patient":
        return true() if ids is None else r.c.res_id.in_(ids)
    params = engine._compartment.get(res_type, [])
    if not params:
        return literal(False)
    ref = ctx.alias(idx_reference)
    where = [ref.c.res_type == res_type, ref.c.param.in_(params),
             ref.c.target_type == "Patient"]
    if ids is not None:
        where.append(ref.c.target_id.in_(ids))
    return r.c.rid.in_(select(ref.c.rid).where(*where))


def read_contents(store: ResourceStore, engine: SearchEngine, caller: Caller, res_type: str,
                  request: ExportRequest, until: int, batch: int = BATCH
                  ) -> Iterator[list[bytes]]:
    """The stored JSON of every resource of ``res_type`` the export includes, batch by batch."""
    grants = grants_for(caller.policy, res_type, "r")
    if grants is not None and not grants:
        return
    r = R_ALIAS
    filters = [engine.parser(strict=True).parse([res_type], list(q)).clauses
               for q in request.type_filters.get(res_type, [])]
    last = 0
    while True:
        with store.reader.connect() as conn:
            ctx = engine.context(caller.base, conn)
            where: list[ColumnElement[bool]] = [
                r.c.res_type == res_type, r.c.deleted.is_(False), r.c.rid > last,
                r.c.last_updated <= until]
            if grants is not None:
                where.append(engine.grant_condition(grants, [res_type], r, ctx))
            if request.level != "system":
                where.append(_patients_condition(engine, res_type, r, ctx, request.patients))
            if request.since is not None:
                where.append(r.c.last_updated >= request.since)
            if filters:
                where.append(or_(*(and_(true(), *(clause_condition(c, res_type, r, ctx)
                                                   for c in clauses))
                                   for clauses in filters)))
            stmt = (select(r.c.rid, V.c.content)
                    .select_from(r.join(V, and_(V.c.rid == r.c.rid,
                                                V.c.version_id == r.c.version_id)))
                    .where(*where).order_by(r.c.rid).limit(batch))
            found = conn.execute(stmt).all()
        yield [bytes(row.content) for row in found if row.content is not None]
        if len(found) < batch:
            return
        last = found[-1].rid


def subset(content: bytes, res_type: str, elements: list[str]) -> bytes:
    """``_elements``: the mandatory top-level elements and those named (``code`` or
    ``Observation.code``), tagged SUBSETTED as FHIR's search ``_elements`` does."""
    wanted = {e.rsplit(".", 1)[-1] for e in elements
              if "." not in e or e.split(".", 1)[0] == res_type}
    resource: dict[str, Any] = jsonio.loads(content)
    kept = {k: v for k, v in resource.items() if k in _ALWAYS or k in wanted}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return jsonio.dumps(kept)


def line(content: bytes) -> bytes:
    """One NDJSON line: stored JSON is compact, but a newline inside would split it."""
    if b"\n" in content or b"\r" in content:
        content = jsonio.dumps(jsonio.loads(content))
    return content + b"\n"


def write_type(scratch: Path, res_type: str, batches: Iterator[list[bytes]],
               request: ExportRequest, max_size: int, check: Callable[[int], None],
               keep: Callable[[str, Path], None]) -> list[Output]:
    """Write one type's files (``Type-1.ndjson``, ``Type-2.ndjson`` past ``max_size``), each
    in ``scratch`` until it is complete and then handed to ``keep(name, path)`` (which takes
    it into the blob store); ``check(n)`` is told the count after each batch and raises
    ``Cancelled`` to stop. A file not yet kept is removed when writing stops early."""
    outputs: list[Output] = []
    handle: BinaryIO | None = None
    path: Path | None = None
    size = 0

    def close() -> None:
        nonlocal handle, path
        if handle is not None and path is not None:
            handle.close()
            keep(outputs[-1].file, path)
        handle, path = None, None

    try:
        for contents in batches:
            for content in contents:
                data = line(subset(content, res_type, request.elements)
                            if request.elements else content)
                if handle is None or (size + len(data) > max_size and size > 0):
                    close()
                    outputs.append(Output(res_type, f"{res_type}-{len(outputs) + 1}.ndjson"))
                    fd, name = tempfile.mkstemp(prefix=".export-", suffix=".ndjson",
                                                dir=scratch)
                    path, handle = Path(name), os.fdopen(fd, "wb")
                    size = 0
                handle.write(data)
                size += len(data)
                outputs[-1].count += 1
            check(len(contents))
        close()
    finally:
        if handle is not None:
            handle.close()
        if path is not None:
            path.unlink(missing_ok=True)
    return outputs
