"""The subscriptions' queue rows: events numbered without gaps or repeats even when
transactions trigger them at the same time, a subscription claimed by one sender at a time
(lease), events handed out oldest first and bounded, outcomes (success, retry with doubling
delays, a handshake given up) and the switched-off state."""

from __future__ import annotations

import threading

from sqlalchemy import update

from sonobridge import jsonio
from sonobridge.store.db import make_engine
from sonobridge.store.queues import LEASE
from sonobridge.store.subscriptions import Outcome, SubscriptionQueue
from sonobridge.store.tables import subscription_channels as C

NOW = 1_800_000_000_000_000


def _queue(db_url: str) -> SubscriptionQueue:
    return SubscriptionQueue(make_engine(db_url))


def _add(q: SubscriptionQueue, sid: str, *, channel: str = "rest-hook",
         handshake: bool = False) -> None:
    with q.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        q.upsert(conn, sid, topic="t", channel=channel, heartbeat=0,
                 config=jsonio.dumps({}), owner=b"{}", handshake=handshake, now=NOW)


def _record(q: SubscriptionQueue, sids: list[str], focus: str) -> dict[str, int]:
    with q.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        return q.record(conn, sids, focus, NOW)


def test_numbers_per_subscription_and_due_state(db_url):
    q = _queue(db_url)
    _add(q, "a")
    _add(q, "b")
    _add(q, "w", channel="websocket")
    assert q.channel("a").status == "idle"
    assert _record(q, ["a", "b", "w"], "Task/1/_history/1") == {"a": 1, "b": 1, "w": 1}
    assert _record(q, ["a"], "Task/1/_history/2") == {"a": 2}
    assert q.channel("a").status == "queued"
    assert q.channel("w").status == "idle"  # websockets are not the sender's
    with q.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        q.switch_off(conn, "b", NOW)
    assert _record(q, ["a", "b"], "Task/2/_history/1") == {"a": 3}
    assert [e.number for e in q.events("a", 1, 10, 10)] == [1, 2, 3]
    assert [e.focus for e in q.events("a", 2, 2, 10)] == ["Task/1/_history/2"]
    q.engine.dispose()


def test_concurrent_triggers_number_without_gaps(db_url):
    """Six transactions at once triggering the same subscriptions: no gap, no repeat, and
    no deadlock on PostgreSQL (rows are locked in one order)."""
    q = _queue(db_url)
    for sid in ("a", "b", "c"):
        _add(q, sid)
    errors: list[BaseException] = []

    def trigger(n: int) -> None:
        try:
            for i in range(20):
                _record(q, ["c", "a", "b"] if n % 2 else ["a", "b", "c"], f"Task/{n}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for sid in ("a", "b", "c"):
        assert [e.number for e in q.events(sid, 1, 200, 200)] == list(range(1, 121))
        assert q.counts([sid]) == {sid: 120}
    q.engine.dispose()


def test_claim_lease_pending_and_outcomes(db_url):
    q = _queue(db_url)
    _add(q, "a")
    _add(q, "h", handshake=True)
    for i in range(5):
        _record(q, ["a"], f"Task/{i}/_history/1")
    rows = q.claim_due(NOW, 10)
    assert sorted(r.subscription_id for r in rows) == ["a", "h"]
    assert q.claim_due(NOW, 10) == []  # leased
    assert {r.subscription_id for r in q.claim_due(NOW + (LEASE + 1) * 1_000_000, 10)} \
        == {"a", "h"}  # a sender that died: taken over after the lease
    a = next(r for r in rows if r.subscription_id == "a")
    pending = q.pending([a], limit_each=3)
    assert [e.number for e in pending["a"]] == [1, 2, 3]
    # Delivered 1..3 while 4..5 wait: queued again; handshake failed once: retry in 2 s.
    h = next(r for r in rows if r.subscription_id == "h")
    changed = q.finished([Outcome(a.id, "a", True, 3, 0),
                          Outcome(h.id, "h", False, 0, 0, handshake=True, error="HTTP 500")],
                         NOW, 2, 8, 3)
    assert changed == []
    row = q.channel("a")
    assert (row.status, row.delivered, row.attempts) == ("queued", 3, 0)
    row = q.channel("h")
    assert (row.status, row.attempts, row.error) == ("retry", 1, "HTTP 500")
    assert row.next_attempt == NOW + 2_000_000
    # The next failures double the delay up to the most; the third handshake failure ends it.
    with q.engine.begin() as conn:
        conn.execute(update(C).where(C.c.subscription_id == "h").values(status="sending"))
    q.finished([Outcome(h.id, "h", False, 0, 1, handshake=True, error="HTTP 500")],
               NOW, 2, 8, 3)
    assert q.channel("h").next_attempt == NOW + 4_000_000
    with q.engine.begin() as conn:
        conn.execute(update(C).where(C.c.subscription_id == "h").values(status="sending"))
    assert q.finished([Outcome(h.id, "h", False, 0, 2, handshake=True, error="x")],
                      NOW, 2, 8, 3) == ["!h"]
    assert (q.channel("h").status, q.channel("h").phase) == ("off", "error")
    # A row no longer claimed (switched off meanwhile) is left as it is.
    assert q.finished([Outcome(a.id, "a", True, 5, 0)], NOW, 2, 8, 3) == []
    assert q.channel("a").delivered == 3
    # Delivered everything: idle.
    rows = q.claim_due(NOW + 1, 10)
    q.finished([Outcome(rows[0].id, "a", True, 5, 0)], NOW, 2, 8, 3)
    assert (q.channel("a").status, q.channel("a").delivered) == ("idle", 5)
    q.engine.dispose()


def test_handshake_success_and_binding_tokens(db_url):
    q = _queue(db_url)
    _add(q, "h", handshake=True)
    _add(q, "w", channel="websocket")
    rows = q.claim_due(NOW, 10)
    assert q.finished([Outcome(rows[0].id, "h", True, 0, 0, handshake=True)],
                      NOW, 2, 8, 3) == ["h"]
    assert (q.channel("h").phase, q.channel("h").status) == ("active", "idle")
    q.set_token(["w", "h"], "hash", NOW + 10)
    assert q.bound("hash", NOW) == ["w"]  # only websocket subscriptions bind
    assert q.bound("hash", NOW + 10) == []  # expired
    assert q.bound("other", NOW) == []
    q.engine.dispose()


def test_prune_keeps_what_is_undelivered(db_url):
    q = _queue(db_url)
    _add(q, "a")
    _add(q, "w", channel="websocket")
    for i in range(3):
        _record(q, ["a", "w"], f"Task/{i}/_history/1")
    rows = q.claim_due(NOW, 10)
    q.finished([Outcome(rows[0].id, "a", True, 2, 0)], NOW, 2, 8, 3)  # 1..2 delivered
    assert q.prune(NOW) == 0  # nothing older than NOW
    assert q.prune(NOW + 1) == 5  # a's 1..2 and w's 1..3; a's 3 is not delivered yet
    assert [e.number for e in q.events("a", 1, 10, 10)] == [3]
    assert q.events("w", 1, 10, 10) == []
    q.engine.dispose()


def test_triggers_and_senders_at_once(db_url):
    """Writers triggering events while two senders claim and finish the same subscriptions:
    no deadlock, and in the end everything triggered is delivered, in order."""
    q = _queue(db_url)
    sids = [f"s{i:02d}" for i in range(12)]
    for sid in sids:
        _add(q, sid)
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def writer(n: int) -> None:
        try:
            for i in range(15):
                _record(q, sids[::-1] if n % 2 else sids, f"Task/{n}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    def sender() -> None:
        try:
            while writing.is_set() or any(q.channel(s).status != "idle" for s in sids):
                rows = q.claim_due(NOW, 5)
                pending = q.pending(rows)
                q.finished([Outcome(r.id, r.subscription_id, True,
                                    (pending[r.subscription_id] or [None])[-1].number
                                    if pending[r.subscription_id] else r.delivered, 0)
                            for r in rows], NOW, 1, 1, 3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    senders = [threading.Thread(target=sender) for _ in range(2)]
    for t in writers + senders:
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    for t in senders:
        t.join(60)
    assert errors == []
    for sid in sids:
        row = q.channel(sid)
        assert (row.events, row.delivered, row.status) == (45, 45, "idle")
    q.engine.dispose()
