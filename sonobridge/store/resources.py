"""The versioned FHIR resource store: one write path for every resource, whoever sends it.

Writes happen inside ``ResourceStore.write()``, one database transaction holding a ``Writer``.
The REST edge, transaction bundles, and later HL7 v2 and DICOM mappings all write through it, so
version numbering, ``meta`` stamping and history are decided here and nowhere else. Resources
arrive already validated; the store gives them their id and ``meta`` and keeps the bytes it
serves afterwards.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Engine,
    Row,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from sonobridge import jsonio
from sonobridge.store.tables import INDEX_TABLES
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R
from sonobridge.store.timeutil import now_us, to_http_date, to_instant


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored. ``content`` is ``None`` for a deletion."""

    type: str
    id: str
    version_id: int
    last_updated: int
    deleted: bool
    content: bytes | None
    method: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def last_updated_instant(self) -> str:
        return to_instant(self.last_updated)

    @property
    def last_modified(self) -> str:
        return to_http_date(self.last_updated)

    @property
    def relative_url(self) -> str:
        return f"{self.type}/{self.id}"

    @property
    def version_url(self) -> str:
        return f"{self.type}/{self.id}/_history/{self.version_id}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: StoredResource
    created: bool
    changed: bool


class VersionConflict(Exception):
    """``If-Match`` named a version that is not the current one."""

    def __init__(self, expected: int, current: int | None) -> None:
        self.expected = expected
        self.current = current
        now = "does not exist" if current is None else f"is at version {current}"
        super().__init__(f"expected version {expected}, but the resource {now}")


def new_id() -> str:
    return str(uuid.uuid4())


def content_hash(resource: dict[str, Any]) -> bytes:
    """Digest of a resource without what the server stamps: spots updates that change nothing."""
    meta = dict(resource.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    body = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        body["meta"] = meta
    return hashlib.sha256(jsonio.dumps(body, sort_keys=True)).digest()


def stamp(resource: dict[str, Any], res_type: str, res_id: str, version: int,
          updated: int) -> bytes:
    """The bytes to keep: ``resourceType``, ``id`` and ``meta`` first, then the body as sent."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    out: dict[str, Any] = {
        "resourceType": res_type,
        "id": res_id,
        "meta": {"versionId": str(version), "lastUpdated": to_instant(updated), **meta},
    }
    for key, value in resource.items():
        if key not in ("resourceType", "id", "meta"):
            out[key] = value
    return jsonio.dumps(out)


# Statements built once; SQLAlchemy caches their compiled form.
_READ = (
    select(R.c.version_id, R.c.last_updated, R.c.deleted, V.c.content)
    .select_from(R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id)))
    .where(R.c.res_type == bindparam("t"), R.c.res_id == bindparam("i"))
)
_VREAD = select(V.c.version_id, V.c.last_updated, V.c.content, V.c.method).where(
    V.c.rid == select(R.c.rid).where(R.c.res_type == bindparam("t"), R.c.res_id == bindparam("i"))
    .scalar_subquery(),
    V.c.version_id == bindparam("v"),
)
_INSERT_RESOURCE = insert(R).returning(R.c.rid)
_INSERT_VERSION = insert(V)
_ADVANCE = update(R).where(R.c.rid == bindparam("b_rid"), R.c.version_id == bindparam("b_old"))
_CURRENT = select(
    R.c.rid, R.c.version_id, R.c.last_updated, R.c.deleted, R.c.content_hash
).where(R.c.res_type == bindparam("t"), R.c.res_id == bindparam("i"))

WriteHook = Callable[["Writer", StoredResource, "dict[str, Any] | None"], None]
# (resource type, resource) -> index rows by table name; supplied by the search layer.
Indexer = Callable[[str, "dict[str, Any]"], "dict[str, list[dict[str, Any]]]"]


class Writer:
    """Write operations inside one open transaction (see ``ResourceStore.write``).

    Search index rows are computed on each write and written by ``flush`` (at commit, or before
    a search inside the transaction), batched per table.
    """

    def __init__(self, conn: Connection, hooks: list[WriteHook], indexer: Indexer | None = None
                 ) -> None:
        self.conn = conn
        self.now = now_us()
        self._hooks = hooks
        self._indexer = indexer
        self._pending: dict[int, tuple[str, dict[str, list[dict[str, Any]]]]] = {}
        self._stale: set[int] = set()
        self.types_written: set[str] = set()
        # Audit records of this transaction's changes, appended to the audit trail by a
        # ``before_commit`` hook so that they commit (or roll back) with the change.
        self.pending_audit: list[Any] = []

    def _index(self, rid: int, res_type: str, resource: dict[str, Any] | None, fresh: bool
               ) -> None:
        self.types_written.add(res_type)
        if not fresh:
            self._stale.add(rid)
        self._pending.pop(rid, None)
        if resource is not None and self._indexer is not None:
            self._pending[rid] = (res_type, self._indexer(res_type, resource))

    def reindex(self, rid: int, res_type: str, resource: dict[str, Any]) -> None:
        """Replace the index rows of a stored resource (after a search parameter change)."""
        self._index(rid, res_type, resource, fresh=False)

    def flush(self) -> None:
        """Write the index rows of everything written so far in this transaction."""
        if self._stale:
            stale = sorted(self._stale)
            for table in INDEX_TABLES.values():
                for start in range(0, len(stale), 500):
                    chunk = stale[start:start + 500]
                    self.conn.execute(delete(table).where(table.c.rid.in_(chunk)))
            self._stale.clear()
        if self._pending:
            batches: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
            for rid, (res_type, tables) in self._pending.items():
                for name, rows in tables.items():
                    target = batches.setdefault(name, [])
                    target.extend((rid, res_type, row) for row in rows)
            for name, items in batches.items():
                _insert_index_rows(self.conn, name, items)
            self._pending.clear()

    def _current(self, res_type: str, res_id: str) -> Row[*tuple[Any, ...]] | None:
        stmt = _CURRENT
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return self.conn.execute(stmt, {"t": res_type, "i": res_id}).first()

    def read(self, res_type: str, res_id: str) -> StoredResource | None:
        return _read(self.conn, res_type, res_id)

    def create(self, res_type: str, resource: dict[str, Any], res_id: str | None = None
               ) -> StoredResource:
        """Create with a server-assigned id (or ``res_id``, used for update-as-create)."""
        res_id = res_id or new_id()
        updated = self.now
        body = stamp(resource, res_type, res_id, 1, updated)
        rid = self.conn.execute(_INSERT_RESOURCE, {
            "res_type": res_type, "res_id": res_id, "version_id": 1, "last_updated": updated,
            "deleted": False, "content_hash": content_hash(resource)}).scalar_one()
        self.conn.execute(_INSERT_VERSION, {
            "rid": rid, "version_id": 1, "res_type": res_type, "res_id": res_id,
            "last_updated": updated, "method": "POST", "content": body})
        self._index(rid, res_type, resource, fresh=True)
        stored = StoredResource(res_type, res_id, 1, updated, False, body, "POST")
        self._run_hooks(stored, resource)
        return stored

    def create_many(self, res_type: str, resources: list[dict[str, Any]],
                    ids: list[str] | None = None) -> list[StoredResource]:
        """Create several resources of one type in two statements (the audit trail's
        batches: hundreds of AuditEvents at a time; an SR's Observations). Ids are the
        server's, or ``ids`` when the caller checked none of them is taken (a taken one,
        even deleted, fails the statement: the unique key)."""
        if not resources:
            return []
        updated = self.now
        if ids is not None and len(ids) != len(resources):
            raise ValueError("one id per resource")
        ids = list(ids) if ids is not None else [new_id() for _ in resources]
        bodies = [stamp(resource, res_type, res_id, 1, updated)
                  for res_id, resource in zip(ids, resources, strict=True)]
        rids: Sequence[int]
        if self.conn.dialect.name == "sqlite":
            rids = _create_many_sqlite(self.conn, res_type, resources, ids, bodies, updated)
        else:
            rids = self.conn.execute(
                insert(R).returning(R.c.rid, sort_by_parameter_order=True),
                [{"res_type": res_type, "res_id": res_id, "version_id": 1,
                  "last_updated": updated, "deleted": False,
                  "content_hash": content_hash(resource)}
                 for res_id, resource in zip(ids, resources, strict=True)]).scalars().all()
            self.conn.execute(_INSERT_VERSION, [
                {"rid": rid, "version_id": 1, "res_type": res_type, "res_id": res_id,
                 "last_updated": updated, "method": "POST", "content": body}
                for rid, res_id, body in zip(rids, ids, bodies, strict=True)])
        out = []
        for rid, res_id, body, resource in zip(rids, ids, bodies, resources, strict=True):
            self._index(rid, res_type, resource, fresh=True)
            stored = StoredResource(res_type, res_id, 1, updated, False, body, "POST")
            self._run_hooks(stored, resource)
            out.append(stored)
        return out

    def update(self, res_type: str, res_id: str, resource: dict[str, Any],
               if_match: int | None = None, method: str = "PUT") -> WriteResult:
        """Update, or create with the client's id. Identical content makes no new version."""
        row = self._current(res_type, res_id)
        if if_match is not None and (row is None or row.deleted or row.version_id != if_match):
            raise VersionConflict(if_match, None if row is None or row.deleted else row.version_id)
        if row is None:
            return WriteResult(self.create(res_type, resource, res_id), created=True, changed=True)
        digest = content_hash(resource)
        if not row.deleted and row.content_hash == digest:
            current = self.read(res_type, res_id)
            assert current is not None
            return WriteResult(current, created=False, changed=False)
        version = row.version_id + 1
        updated = max(self.now, row.last_updated + 1)
        body = stamp(resource, res_type, res_id, version, updated)
        self._advance(row.rid, row.version_id, version, updated, False, digest)
        self.conn.execute(_INSERT_VERSION, {
            "rid": row.rid, "version_id": version, "res_type": res_type, "res_id": res_id,
            "last_updated": updated, "method": method, "content": body})
        self._index(row.rid, res_type, resource, fresh=False)
        stored = StoredResource(res_type, res_id, version, updated, False, body, method)
        self._run_hooks(stored, resource)
        return WriteResult(stored, created=row.deleted, changed=True)

    def delete(self, res_type: str, res_id: str, if_match: int | None = None
               ) -> StoredResource | None:
        """Delete; the deletion is a version in the history. ``None`` when nothing was there."""
        row = self._current(res_type, res_id)
        if if_match is not None and (row is None or row.deleted or row.version_id != if_match):
            raise VersionConflict(if_match, None if row is None or row.deleted else row.version_id)
        if row is None or row.deleted:
            return None
        version = row.version_id + 1
        updated = max(self.now, row.last_updated + 1)
        self._advance(row.rid, row.version_id, version, updated, True, None)
        self.conn.execute(_INSERT_VERSION, {
            "rid": row.rid, "version_id": version, "res_type": res_type, "res_id": res_id,
            "last_updated": updated, "method": "DELETE", "content": None})
        self._index(row.rid, res_type, None, fresh=False)
        stored = StoredResource(res_type, res_id, version, updated, True, None, "DELETE")
        self._run_hooks(stored, None)
        return stored

    def _advance(self, rid: int, old: int, new: int, updated: int, deleted: bool,
                 digest: bytes | None) -> None:
        result = self.conn.execute(_ADVANCE, {
            "b_rid": rid, "b_old": old, "version_id": new, "last_updated": updated,
            "deleted": deleted, "content_hash": digest})
        if result.rowcount != 1:  # another writer got there first (only possible without locks)
            raise VersionConflict(old, None)

    def _run_hooks(self, stored: StoredResource, resource: dict[str, Any] | None) -> None:
        for hook in self._hooks:
            hook(self, stored, resource)


def _read(conn: Connection, res_type: str, res_id: str) -> StoredResource | None:
    row = conn.execute(_READ, {"t": res_type, "i": res_id}).first()
    if row is None:
        return None
    return StoredResource(res_type, res_id, row.version_id, row.last_updated, row.deleted,
                          row.content)


@dataclass(frozen=True, slots=True)
class HistoryKey:
    """Position in a history listing (newest first), for stable paging while data changes."""

    last_updated: int
    rid: int
    version_id: int

    def encode(self) -> str:
        return f"{self.last_updated}.{self.rid}.{self.version_id}"

    @classmethod
    def decode(cls, text: str) -> HistoryKey:
        parts = text.split(".")
        if len(parts) != 3 or not all(p.isascii() and p.isdecimal() and len(p) <= 18
                                      for p in parts):
            raise ValueError(f"not a history page key: {text[:60]!r}")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


class ResourceStore:
    """Reads and the write transaction. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, indexer: Indexer | None = None) -> None:
        self.engine = engine
        self.hooks: list[WriteHook] = []
        self.indexer = indexer
        # Called with the writer after its transaction committed.
        self.after_commit: list[Callable[[Writer], None]] = []
        # Called with the writer just before it commits (the audit trail).
        self.before_commit: list[Callable[[Writer], None]] = []
        postgres = engine.dialect.name == "postgresql"
        # Reads need no transaction: on PostgreSQL autocommit saves the BEGIN and ROLLBACK
        # round trips. On SQLite they stay in-process and cheap, and a point read is fast enough
        # to run on the event loop (``inline_reads``).
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT") if postgres \
            else engine
        self.inline_reads = not postgres

    @contextmanager
    def write(self) -> Iterator[Writer]:
        """One all-or-nothing transaction: everything written in the block commits together."""
        with self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            writer = Writer(conn, self.hooks, self.indexer)
            yield writer
            for hook in self.before_commit:  # e.g. the change's audit events
                hook(writer)
            writer.flush()  # the index rows of all of it, one insert per index table
        for callback in self.after_commit:
            callback(writer)

    def read(self, res_type: str, res_id: str) -> StoredResource | None:
        with self.reader.connect() as conn:
            return _read(conn, res_type, res_id)

    def vread(self, res_type: str, res_id: str, version_id: int) -> StoredResource | None:
        with self.reader.connect() as conn:
            row = conn.execute(_VREAD, {"t": res_type, "i": res_id, "v": version_id}).first()
        if row is None:
            return None
        return StoredResource(res_type, res_id, row.version_id, row.last_updated,
                              row.content is None, row.content, row.method)

    def history(self, *, res_type: str | None = None, res_id: str | None = None,
                since: int | None = None, at: tuple[int, int] | None = None,
                after: HistoryKey | None = None, count: int = 100
                ) -> tuple[list[StoredResource], HistoryKey | None]:
        """Versions newest first; returns one page and the key of the next page (or ``None``).

        ``since``: versions written at or after that time. ``at`` = (start, end): versions that
        were current at some moment in [start, end).
        """
        stmt = select(V.c.rid, V.c.version_id, V.c.res_type, V.c.res_id, V.c.last_updated,
                      V.c.method, V.c.content)
        if res_type is not None and res_id is not None:
            stmt = stmt.where(V.c.rid == select(R.c.rid).where(
                R.c.res_type == res_type, R.c.res_id == res_id).scalar_subquery())
        elif res_type is not None:
            stmt = stmt.where(V.c.res_type == res_type)
        if since is not None:
            stmt = stmt.where(V.c.last_updated >= since)
        if at is not None:
            start, end = at
            nxt = aliased(V)
            stmt = stmt.where(V.c.last_updated < end, ~exists().where(
                nxt.c.rid == V.c.rid, nxt.c.version_id == V.c.version_id + 1,
                nxt.c.last_updated <= start))
        if after is not None:
            stmt = stmt.where(tuple_(V.c.last_updated, V.c.rid, V.c.version_id)
                              < tuple_(after.last_updated, after.rid, after.version_id))
        stmt = stmt.order_by(V.c.last_updated.desc(), V.c.rid.desc(), V.c.version_id.desc())
        stmt = stmt.limit(count + 1)
        with self.reader.connect() as conn:
            rows = conn.execute(stmt).all()
        page = [StoredResource(r.res_type, r.res_id, r.version_id, r.last_updated,
                               r.content is None, r.content, r.method) for r in rows[:count]]
        next_key = None
        if len(rows) > count:
            last = rows[count - 1]
            next_key = HistoryKey(last.last_updated, last.rid, last.version_id)
        return page, next_key

    def exists_any(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(
                select(R.c.rid).limit(1).subquery())).scalar_one() > 0

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1)).scalar_one()


def _create_many_sqlite(conn: Connection, res_type: str, resources: list[dict[str, Any]],
                        ids: list[str], bodies: list[bytes], updated: int) -> list[int]:
    """``Writer.create_many``'s two inserts on SQLite, through the driver's ``executemany``
    (the same rows: SQLAlchemy's per-row parameter processing and its ordered ``RETURNING``
    batches cost more than SQLite's work, about 1 ms for an SR's 55 Observations); the new
    rids are read back by id, one indexed lookup per 500. A taken id fails the insert (the
    unique key), as it does elsewhere."""
    conn.exec_driver_sql(
        "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, "
        "content_hash) VALUES (?, ?, 1, ?, 0, ?)",
        [(res_type, res_id, updated, content_hash(resource))
         for res_id, resource in zip(ids, resources, strict=True)])
    found: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(conn.exec_driver_sql(
            "SELECT res_id, rid FROM resources WHERE res_type = ? AND res_id IN "
            f"({', '.join('?' for _ in chunk)})", (res_type, *chunk)).all())
    rids = [found[res_id] for res_id in ids]
    conn.exec_driver_sql(
        "INSERT INTO resource_versions (rid, version_id, res_type, res_id, last_updated, "
        "method, content) VALUES (?, 1, ?, ?, ?, 'POST', ?)",
        [(rid, res_type, res_id, updated, body)
         for rid, res_id, body in zip(rids, ids, bodies, strict=True)])
    return rids


_INDEX_INSERTS: dict[str, tuple[str, tuple[str, ...]]] = {}


def _insert_index_rows(conn: Connection, name: str,
                       items: list[tuple[int, str, dict[str, Any]]]) -> None:
    """Insert index rows, each (rid, resource type, the row's own columns). On SQLite they
    go to the driver's ``executemany`` as tuples: SQLAlchemy's per-row parameter processing
    cost more than the insert itself (about a third of an AuditEvent's write, and every
    request writes one), and the index columns are plain text and numbers that need no bind
    processing. Elsewhere SQLAlchemy's ``insertmanyvalues`` batching is the faster path and
    is kept."""
    table = INDEX_TABLES[name]
    if conn.dialect.name != "sqlite":
        conn.execute(insert(table), [{"rid": rid, "res_type": res_type, "grp": None,
                                      "sort": None, **row} for rid, res_type, row in items])
        return
    found = _INDEX_INSERTS.get(name)
    if found is None:
        columns = tuple(c.name for c in table.columns)
        assert columns[:2] == ("rid", "res_type")
        found = (f"INSERT INTO {name} ({', '.join(columns)}) "
                 f"VALUES ({', '.join('?' for _ in columns)})", columns[2:])
        _INDEX_INSERTS[name] = found
    sql, own = found
    conn.exec_driver_sql(sql, [(rid, res_type, *map(row.get, own))
                               for rid, res_type, row in items])
