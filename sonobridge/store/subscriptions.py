"""The subscriptions' durable notification queue: rows only, no FHIR.

A subscription is one row of ``subscription_channels``: its event counter (``events``, the
number of the last event triggered), what was delivered (``delivered``), and its delivery
state as a send queue (``store/queues.py``: status, attempts, next_attempt, lease). The queue
unit is the subscription, not the event: a sender that claims a subscription sends its
undelivered events in order, in one notification, so a failing endpoint keeps its events in
order and waits out its own backoff while every other subscription goes on.

Statuses: ``idle`` (nothing to send), ``queued``, ``retry``, ``sending`` (claimed, with a
lease), ``off`` (the subscription was switched off, deleted, or its handshake failed).
Phases: ``handshake`` (a rest-hook subscription waiting for its handshake), ``active``,
``error``.

Triggering an event (``record``) is one UPDATE ... RETURNING of the counters and one INSERT
of the events, in the transaction of the change that triggered them, so the notification
commits (or rolls back) with the change. The UPDATE takes each subscription's row lock, so two
transactions that trigger events for the same subscription number them one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    cast,
    insert,
    literal,
    select,
    update,
)

from sonobridge.store import queues
from sonobridge.store.queues import QueueRow
from sonobridge.store.tables import subscription_channels as C
from sonobridge.store.tables import subscription_events as E

# Undelivered events sent in one notification at most (a backlog goes out in several).
MAX_BATCH = 100


@dataclass(frozen=True, slots=True)
class Event:
    subscription_id: str
    number: int
    focus: str  # Type/id/_history/version
    created: int  # µs


def _event(row: Any) -> Event:
    return Event(row.subscription_id, int(row.number), row.focus, int(row.created))


class SubscriptionQueue:
    """What the subscription service and its senders do with the two tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The queue rules' helpers (waiting count, the status report) over the rest-hook rows.
        self.queue = queues.Queue(engine, C, [C.c.channel == "rest-hook"])

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_write=True)

    # ------------------------------------------------------------ in the change's transaction

    def upsert(self, conn: Connection, subscription_id: str, *, topic: str, channel: str,
               heartbeat: int, config: bytes, owner: bytes, handshake: bool, now: int
               ) -> None:
        """Create or refresh a subscription's row from its resource (in the write's
        transaction). ``handshake``: a rest-hook subscription that must be handshaken
        before it is active; the sender does that first."""
        existing = conn.execute(select(C.c.id, C.c.status, C.c.phase).where(
            C.c.subscription_id == subscription_id)).first()
        values: dict[str, Any] = {"topic": topic, "channel": channel, "heartbeat": heartbeat,
                                  "config": config, "owner": owner, "updated": now,
                                  "heartbeat_due": now + heartbeat * 1_000_000}
        if handshake:
            values.update(phase="handshake", status="queued", attempts=0, next_attempt=now,
                          error=None)
        if existing is None:
            fresh = {"phase": "active", "status": "idle", "attempts": 0, "next_attempt": now,
                     **values}
            conn.execute(insert(C).values(subscription_id=subscription_id, events=0,
                                          delivered=0, created=now, **fresh))
            return
        if not handshake and existing.status == "off":
            values.update(status="idle", phase="active", attempts=0, error=None)
        conn.execute(update(C).where(C.c.id == existing.id).values(**values))

    def switch_off(self, conn: Connection, subscription_id: str, now: int) -> None:
        conn.execute(update(C).where(C.c.subscription_id == subscription_id).values(
            status="off", updated=now))

    def owner(self, conn: Connection, subscription_id: str) -> bytes | None:
        value = conn.execute(select(C.c.owner).where(
            C.c.subscription_id == subscription_id)).scalar()
        return bytes(value) if value is not None else None

    def listening(self, conn: Connection, topic: str) -> list[tuple[str, bytes, bytes]]:
        """(subscription id, config, owner) of every subscription to ``topic`` not off."""
        return [(row.subscription_id, row.config, row.owner) for row in conn.execute(
            select(C.c.subscription_id, C.c.config, C.c.owner).where(
                C.c.topic == topic, C.c.status != "off"))]

    def lock(self, conn: Connection, subscription_ids: Sequence[str]) -> list[int]:
        """Lock the subscriptions' rows in one order, the row id's (PostgreSQL; SQLite
        serializes writers): the order the senders' claims take them in. Whoever writes
        several rows locks them first, so two transactions never wait for each other in a
        circle (an UPDATE ... IN locks rows in whatever order it finds them). Returns the
        row ids, ascending."""
        wanted = sorted(set(subscription_ids))
        ids: list[int] = []
        for start in range(0, len(wanted), 500):
            ids += [int(row.id) for row in conn.execute(select(C.c.id).where(
                C.c.subscription_id.in_(wanted[start:start + 500])))]
        ids.sort()
        for start in range(0, len(ids), 500):
            conn.execute(select(C.c.id).where(C.c.id.in_(ids[start:start + 500]))
                         .order_by(C.c.id).with_for_update())
        return ids

    def record(self, conn: Connection, subscription_ids: Sequence[str], focus: str, now: int
               ) -> dict[str, int]:
        """Trigger one event (about ``focus``) for each subscription: its next number, and a
        rest-hook subscription with nothing pending becomes due now."""
        if not subscription_ids:
            return {}
        idle = and_(C.c.status == "idle", C.c.channel == "rest-hook")
        numbers: dict[str, int] = {}
        rows = self.lock(conn, subscription_ids)
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            result = conn.execute(
                update(C).where(C.c.id.in_(chunk), C.c.status != "off")
                .values(events=C.c.events + 1,
                        status=case((idle, "queued"), else_=C.c.status),
                        next_attempt=case((idle, now), else_=C.c.next_attempt))
                .returning(C.c.subscription_id, C.c.events))
            numbers.update((row.subscription_id, int(row.events)) for row in result)
        if numbers:
            conn.execute(insert(E), [
                {"subscription_id": sid, "number": number, "focus": focus, "created": now}
                for sid, number in numbers.items()])
        return numbers

    # ------------------------------------------------------------ the senders

    _COLUMNS = ("subscription_id", "topic", "phase", "events", "delivered", "attempts",
                "heartbeat", "config", "owner")

    def _claim(self, due: Sequence[Any], now: int, limit: int) -> list[QueueRow]:
        """The queue rules' claim (``store/queues.py``: a lease of ``LEASE`` seconds, oldest
        first), taking the rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` in row-id order
        on PostgreSQL: a row a writer is triggering events on is left for the next round,
        and the claim never waits in a circle with a writer (``lock``)."""
        with self._write() as conn, conn.begin():
            ids = [int(row.id) for row in conn.execute(
                select(C.c.id).where(*due).order_by(C.c.id).limit(limit)
                .with_for_update(skip_locked=True))]
            if not ids:
                return []
            conn.execute(update(C).where(C.c.id.in_(ids)).values(
                status="sending", next_attempt=now + queues.LEASE * 1_000_000, updated=now))
            return list(conn.execute(select(C.c.id, *(C.c[c] for c in self._COLUMNS))
                                     .where(C.c.id.in_(ids)).order_by(C.c.id)))

    def claim_due(self, now: int, limit: int) -> list[QueueRow]:
        """Rest-hook subscriptions with something to send (a handshake or events), claimed
        (waiting statuses, due; ``sending`` with an expired lease: its sender died)."""
        return self._claim([C.c.channel == "rest-hook", C.c.status.in_(queues.Queue.WAITING),
                            C.c.next_attempt <= now], now, limit)

    def claim_heartbeats(self, now: int, limit: int) -> list[QueueRow]:
        """Idle active rest-hook subscriptions whose heartbeat is due, claimed."""
        return self._claim([C.c.channel == "rest-hook", C.c.status == "idle",
                            C.c.phase == "active", C.c.heartbeat > 0,
                            C.c.heartbeat_due <= now], now, limit)

    def pending(self, rows: Sequence[QueueRow], limit_each: int = MAX_BATCH
                ) -> dict[str, list[Event]]:
        """The undelivered events of claimed subscriptions, oldest first, at most
        ``limit_each`` each (one query per 500 subscriptions, joined on the queue rows)."""
        out: dict[str, list[Event]] = {row.subscription_id: [] for row in rows}
        wanted = [int(row.id) for row in rows if row.events > row.delivered]
        join = E.join(C, C.c.subscription_id == E.c.subscription_id)
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for event in conn.execute(
                        select(E.c.subscription_id, E.c.number, E.c.focus, E.c.created)
                        .select_from(join)
                        .where(C.c.id.in_(chunk), E.c.number > C.c.delivered,
                               E.c.number <= C.c.delivered + limit_each)
                        .order_by(E.c.subscription_id, E.c.number)):
                    out[event.subscription_id].append(_event(event))
        return out

    def finished(self, outcomes: Sequence[Outcome], now: int, first_delay: int,
                 max_delay: int, handshake_attempts: int) -> list[str]:
        """Record what each claimed delivery did, in one transaction (one statement per
        kind of outcome, executed for many rows). Returns the ids of subscriptions whose
        handshake just succeeded (their resource becomes active) and, prefixed with ``!``,
        those whose handshake failed for good (it becomes error)."""
        changed: list[str] = []
        ok: list[dict[str, Any]] = []
        ok_handshake: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        given_up: list[dict[str, Any]] = []
        for o in outcomes:
            attempts = o.attempts + 1
            if o.ok:
                (ok_handshake if o.handshake else ok).append(
                    {"b_id": o.row_id, "b_delivered": o.delivered})
                if o.handshake:
                    changed.append(o.subscription_id)
            elif o.handshake and attempts >= handshake_attempts:
                given_up.append({"b_id": o.row_id, "b_attempts": attempts,
                                 "b_error": o.error[:1024]})
                changed.append("!" + o.subscription_id)
            else:
                delay = min(first_delay * 2 ** (attempts - 1), max_delay)
                retry.append({"b_id": o.row_id, "b_attempts": attempts,
                              "b_error": o.error[:1024],
                              "b_next": now + delay * 1_000_000})
        mine = [C.c.id == bindparam("b_id"), C.c.status == "sending"]
        delivered: Any = bindparam("b_delivered")
        success = {
            "delivered": case((C.c.delivered > delivered, C.c.delivered), else_=delivered),
            "status": case((C.c.events > delivered, "queued"), else_="idle"),
            "attempts": 0, "error": None, "next_attempt": now, "updated": now,
            # BIGINT arithmetic: seconds * 10^6 overflows PostgreSQL's INTEGER.
            "heartbeat_due": literal(now, BigInteger)
            + cast(C.c.heartbeat, BigInteger) * literal(1_000_000, BigInteger)}
        with self._write() as conn, conn.begin():
            ids = sorted({o.row_id for o in outcomes})
            for start in range(0, len(ids), 500):  # in the one order (see ``lock``)
                conn.execute(select(C.c.id).where(C.c.id.in_(ids[start:start + 500]))
                             .order_by(C.c.id).with_for_update())
            if ok:
                conn.execute(update(C).where(*mine).values(**success), ok)
            if ok_handshake:
                conn.execute(update(C).where(*mine).values(phase="active", **success),
                             ok_handshake)
            if retry:
                conn.execute(update(C).where(*mine).values(
                    status="retry", attempts=bindparam("b_attempts"),
                    error=bindparam("b_error"), next_attempt=bindparam("b_next"),
                    updated=now), retry)
            if given_up:
                conn.execute(update(C).where(*mine).values(
                    status="off", phase="error", attempts=bindparam("b_attempts"),
                    error=bindparam("b_error"), updated=now), given_up)
        return changed

    def prune(self, before: int, limit: int = 10_000) -> int:
        """Forget events older than ``before`` (µs) that are delivered (or whose
        subscription is a websocket one, read live, or gone): ``$events`` answers from what
        is kept. Bounded work: at most ``limit`` rows per call."""
        done = select(C.c.subscription_id).where(
            C.c.subscription_id == E.c.subscription_id,
            (C.c.channel == "websocket") | (C.c.delivered >= E.c.number))
        gone = ~select(C.c.id).where(C.c.subscription_id == E.c.subscription_id).exists()
        with self._write() as conn, conn.begin():
            ids = [row.id for row in conn.execute(
                select(E.c.id).where(E.c.created < before, done.exists() | gone)
                .order_by(E.c.id).limit(limit))]
            if ids:
                conn.execute(E.delete().where(E.c.id.in_(ids)))
        return len(ids)

    # ------------------------------------------------------------ reads

    def channel(self, subscription_id: str) -> QueueRow | None:
        with self.engine.connect() as conn:
            return conn.execute(select(C).where(C.c.subscription_id == subscription_id)).first()

    def events(self, subscription_id: str, since: int, until: int, limit: int
               ) -> list[Event]:
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(select(E).where(
                E.c.subscription_id == subscription_id, E.c.number >= since,
                E.c.number <= until).order_by(E.c.number).limit(limit))]

    def counts(self, subscription_ids: Sequence[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {row.subscription_id: int(row.events) for row in conn.execute(
                select(C.c.subscription_id, C.c.events).where(
                    C.c.subscription_id.in_(list(subscription_ids))))}

    # ------------------------------------------------------------ websocket binding tokens

    def set_token(self, subscription_ids: Sequence[str], token_hash: str, expires: int) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(update(C).where(C.c.subscription_id.in_(list(subscription_ids)))
                         .values(token_hash=token_hash, token_expires=expires))

    def bound(self, token_hash: str, now: int) -> list[str]:
        """The websocket subscriptions a binding token is valid for (none when expired)."""
        with self.engine.connect() as conn:
            return [row.subscription_id for row in conn.execute(select(C.c.subscription_id)
                    .where(C.c.token_hash == token_hash, C.c.token_expires > now,
                           C.c.channel == "websocket", C.c.status != "off")
                    .order_by(C.c.subscription_id))]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt of a claimed subscription did."""

    row_id: int
    subscription_id: str
    ok: bool
    delivered: int  # the last event number now delivered (when ok)
    attempts: int  # attempts before this one
    handshake: bool = False
    error: str = ""
