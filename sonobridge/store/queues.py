"""The persistent send queues' shared rules (ORU^R01 out, DICOM forwarding, Storage
Commitment reports): when to try again, and claiming what is due.

A row is claimed by setting it to ``sending`` with a lease (``next_attempt`` moved ahead by
``LEASE``): a sender in another process on the same database skips it, and takes it over if
this one dies before it finishes. On PostgreSQL a concurrent claim waits for the row and then
finds it no longer due; on SQLite claims are serialized by the write lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, Table, func, insert, select, update

# A queue table's row, its columns by name (``row.id``, ``row.attempts``…).
QueueRow = Row[*tuple[Any, ...]]

LEASE = 300  # seconds a claimed row belongs to its sender
FIRST_DELAY, MAX_DELAY = 5, 3600  # seconds: 5 s, doubling, at most an hour


def retry_delay(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failed try."""
    doubling: int = 2 ** (attempts - 1)  # a whole number: attempts count from 1
    return min(FIRST_DELAY * doubling, MAX_DELAY)


def retry_at(attempts: int, now: int) -> int:
    """When (µs) to try again after the ``attempts``-th failed try."""
    return now + retry_delay(attempts) * 1_000_000


def claim(conn: Connection, table: Table, due: Sequence[ColumnElement[bool]], now: int,
          limit: int) -> list[int]:
    """Ids of up to ``limit`` due rows, oldest first, now claimed by this caller (inside the
    caller's write transaction); ``due`` must admit status ``sending`` with an expired lease
    as well as the queue's waiting statuses."""
    ids = [row.id for row in conn.execute(
        select(table.c.id).where(*due).order_by(table.c.id).limit(limit))]
    if not ids:
        return []
    lease = now + LEASE * 1_000_000
    conn.execute(update(table).where(table.c.id.in_(ids), *due).values(
        status="sending", next_attempt=lease, updated=now))
    return [row.id for row in conn.execute(select(table.c.id).where(
        table.c.id.in_(ids), table.c.status == "sending", table.c.next_attempt == lease))]


def summary(conn: Connection, table: Table, by: Sequence[str], shown: Sequence[str],
            problems: Sequence[str] = ("retry", "failed"), limit: int = 20
            ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """(rows counted by ``by`` + status, the latest ``limit`` rows in one of the
    ``problems`` states, with ``shown`` + status, attempts, error, updated): what the status
    commands print."""
    group = [table.c[name] for name in by] + [table.c.status]
    counts = conn.execute(select(*group, func.count()).group_by(*group)).all()
    latest = conn.execute(
        select(*(table.c[name] for name in shown), table.c.status, table.c.attempts,
               table.c.error, table.c.updated)
        .where(table.c.status.in_(problems))
        .order_by(table.c.updated.desc()).limit(limit)).all()
    return [tuple(row) for row in counts], [dict(row._mapping) for row in latest]


class Queue:
    """One persistent send queue (a table with ``id``, ``status``, ``attempts``,
    ``next_attempt``, ``error``, ``updated``): what a sender does with it, without SQL of its
    own. ``scope`` narrows a shared table (the HL7 log holds inbound rows too)."""

    WAITING = ("queued", "retry", "sending")

    def __init__(self, engine: Engine, table: Table,
                 scope: Sequence[ColumnElement[bool]] = ()) -> None:
        self.engine = engine
        self.table = table
        self.scope = tuple(scope)

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_write=True)

    def _due(self, now: int, statuses: Sequence[str]) -> list[ColumnElement[bool]]:
        t = self.table
        return [*self.scope, t.c.status.in_(list(statuses)), t.c.next_attempt <= now]

    def enqueue(self, conn: Connection, **values: Any) -> int:
        """A new row, in the caller's transaction (it commits with what it reports)."""
        result = conn.execute(insert(self.table).values(**values))
        key = result.inserted_primary_key
        assert key is not None, "a single-row INSERT reports its primary key"
        return int(key[0])

    def add(self, **values: Any) -> int:
        """A new row, in a transaction of its own."""
        with self._write() as conn, conn.begin():
            return self.enqueue(conn, **values)

    def claim_due(self, now: int, limit: int, *columns: str) -> list[QueueRow]:
        """Claim up to ``limit`` due rows (a lease, see ``claim``) and return them (``id``
        and ``columns``), oldest first."""
        t = self.table
        with self._write() as conn, conn.begin():
            ids = claim(conn, t, self._due(now, self.WAITING), now, limit)
            if not ids:
                return []
            return list(conn.execute(select(t.c.id, *(t.c[c] for c in columns)).where(
                t.c.id.in_(ids)).order_by(t.c.id)).all())

    def due_ids(self, now: int, limit: int, statuses: Sequence[str] = ("retry", "sending")
                ) -> list[int]:
        with self.engine.connect() as conn:
            return [row.id for row in conn.execute(select(self.table.c.id).where(
                *self._due(now, statuses)).order_by(self.table.c.id).limit(limit))]

    def claim_one(self, row_id: int, now: int, statuses: Sequence[str] = ("retry", "sending")
                  ) -> QueueRow | None:
        """Take one due row (the whole row), unless another sender has it."""
        t = self.table
        with self._write() as conn, conn.begin():
            taken = conn.execute(update(t).where(t.c.id == row_id, *self._due(now, statuses))
                                 .values(status="sending", next_attempt=now + LEASE * 1_000_000,
                                         updated=now))
            if taken.rowcount != 1:
                return None
            return conn.execute(select(t).where(t.c.id == row_id)).first()

    def set(self, row_ids: Sequence[int], **values: Any) -> None:
        t = self.table
        with self._write() as conn, conn.begin():
            conn.execute(update(t).where(t.c.id.in_(list(row_ids))).values(**values))

    def set_each(self, changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Several rows, each with its own values, in one transaction."""
        t = self.table
        with self._write() as conn, conn.begin():
            for row_id, values in changes:
                conn.execute(update(t).where(t.c.id == row_id).values(**values))

    def value(self, row_id: int, column: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(self.table.c[column]).where(
                self.table.c.id == row_id)).scalar_one()

    def waiting(self) -> int:
        t = self.table
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t).where(
                *self.scope, t.c.status.in_(list(self.WAITING)))).scalar_one())

    def exists(self, conn: Connection, **equal: Any) -> bool:
        t = self.table
        return conn.execute(select(t.c.id).where(
            *self.scope, *(t.c[k] == v for k, v in equal.items())).limit(1)).first() \
            is not None

    def report(self, by: Sequence[str], shown: Sequence[str],
               problems: Sequence[str] = ("retry", "failed"), limit: int = 20
               ) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """What the status commands print (see ``summary``)."""
        with self.engine.connect() as conn:
            return summary(conn, self.table, by, shown, problems, limit)


def hl7_outbox(engine: Engine) -> Queue:
    """ORU^R01 (and later messages) waiting to go out: the HL7 log's outbound rows."""
    from sonobridge.store.tables import hl7_messages

    return Queue(engine, hl7_messages, [hl7_messages.c.direction == "out"])


def hl7_log(engine: Engine) -> Queue:
    """Every HL7 message in and out (for ``sonobridge mllp status``)."""
    from sonobridge.store.tables import hl7_messages

    return Queue(engine, hl7_messages)


def dicom_forwards(engine: Engine) -> Queue:
    from sonobridge.store.tables import dicom_forwards as table

    return Queue(engine, table)


def dicom_commitments(engine: Engine) -> Queue:
    from sonobridge.store.tables import dicom_commitments as table

    return Queue(engine, table)
