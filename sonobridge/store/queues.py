"""The persistent send queues' shared rules (ORU^R01 out, DICOM forwarding, Storage
Commitment reports): when to try again, and claiming what is due.

A row is claimed by setting it to ``sending`` with a lease (``next_attempt`` moved ahead by
``LEASE``): a sender in another process on the same database skips it, and takes it over if
this one dies before it finishes. On PostgreSQL a concurrent claim waits for the row and then
finds it no longer due; on SQLite claims are serialized by the write lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, Table, func, select, update

LEASE = 300  # seconds a claimed row belongs to its sender
FIRST_DELAY, MAX_DELAY = 5, 3600  # seconds: 5 s, doubling, at most an hour


def retry_delay(attempts: int) -> int:
    """Seconds to wait after the ``attempts``-th failed try."""
    return min(FIRST_DELAY * 2 ** (attempts - 1), MAX_DELAY)


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
            ) -> tuple[list[tuple], list[dict]]:
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
