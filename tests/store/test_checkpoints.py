"""SQLite WAL checkpoints: off the commit path when asked, and then done by a Checkpointer."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from sonobridge.store.db import Checkpointer, make_engine

PAGE = 4096


def _write(engine, rows: int) -> None:
    blob = os.urandom(3000)
    with engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB)"))
    for _ in range(rows):  # one commit each, as the gateway writes
        with engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            conn.execute(text("INSERT INTO t (b) VALUES (:b)"), {"b": blob})


def _wal_pages(db: Path) -> float:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size / PAGE if wal.exists() else 0


def test_commits_checkpoint_by_default(tmp_path):
    db = tmp_path / "a.db"
    engine = make_engine(f"sqlite:///{db}")
    _write(engine, 3000)  # about 3,000 pages
    assert _wal_pages(db) < 1200  # the WAL went back to its start at each checkpoint
    engine.dispose()


class _Counted(Checkpointer):
    rounds = 0

    def round(self) -> None:
        super().round()
        self.rounds += 1


def test_background_checkpoints_leave_commits_alone_until_the_checkpointer_runs(tmp_path):
    db = tmp_path / "b.db"
    engine = make_engine(f"sqlite:///{db}", background_checkpoints=True)
    _write(engine, 3000)
    grown = _wal_pages(db)
    assert grown > 2500  # no commit checkpointed
    # restart_wait as long as the product's default round: on a loaded CI machine a RESTART that
    # gives up after 0.1 s may miss every gap between the test's bursts of writes.
    checkpointer = _Counted(engine, interval=0.02, restart_pages=1000, restart_wait=1.0)
    checkpointer.start()
    try:
        for _ in range(6):  # sustained writes: the WAL is restarted, not grown
            rounds = checkpointer.rounds
            _write(engine, 500)
            # A loaded machine may not schedule the thread for a while: wait for a round so
            # that each 500 writes meet one, as they would at the default interval.
            deadline = time.monotonic() + 10
            while checkpointer.rounds < rounds + 2 and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        checkpointer.stop()
    with sqlite3.connect(db) as conn:
        busy, in_wal, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and in_wal == copied  # all copied into the database file...
    # ...and the WAL started over while writes went on: without a restart it holds every frame
    # of the 6,000 commits (about 18,000, three per commit); with one it holds the frames since
    # the last restart: 1,500 per burst of 500 commits, two or three bursts on a loaded machine.
    assert in_wal < 6000
    assert _wal_pages(db) < grown + 3000
    with engine.connect() as conn:  # and nothing was lost
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 6000
    engine.dispose()


def test_the_core_runs_one_for_sqlite(tmp_path):
    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.config import Settings

    core = open_core(Settings(data_dir=tmp_path, audit=False, auth="disabled"))
    try:
        assert core.checkpointer is not None and core.checkpointer._thread.is_alive()
    finally:
        core.close()
    assert not core.checkpointer._thread.is_alive()
