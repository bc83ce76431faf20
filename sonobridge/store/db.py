"""Database engines for the two supported back ends: SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing on upgrade.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from sonobridge.periodic import Periodic

log = logging.getLogger("sonobridge.store")

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseURLError(ValueError):
    """The database URL names a back end this gateway does not support."""


def normalise_url(url: str) -> str:
    """Map the URL forms operators write to the drivers this package ships.

    ``postgresql://`` and ``postgres://`` use psycopg 3; ``sqlite:///path`` stays as it is.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    if backend == "sqlite":
        return url
    raise DatabaseURLError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, background_checkpoints: bool = False) -> Engine:
    """Create the engine for ``url`` with the settings each back end needs.

    ``background_checkpoints`` (SQLite): commits no longer run WAL checkpoints themselves; the
    caller runs a :class:`Checkpointer` instead."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, background_checkpoints)
    # No server-side prepared statements: psycopg prepares a statement after five runs, and
    # PostgreSQL may then keep a generic plan chosen while a table was still empty (a sequential
    # scan that gets slower with every row). Measured: ingest fell from 720/s to 360/s.
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True,
                         connect_args={"prepare_threshold": None})


def _sqlite_engine(url: str, background_checkpoints: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=16,
        max_overflow=16,
        # The connection used last is the one used next: each SQLite connection has its own
        # page cache, which another connection's write makes stale. First-in-first-out, one
        # extra connection (a queue sender's round once a second) made every HL7 message
        # start on a cold cache: 555 -> 505 msg/s.
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry
                    ) -> None:
        # Take transaction control away from the sqlite3 module: we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-16384")  # 16 MB per connection
        cursor.execute("PRAGMA mmap_size=268435456")  # reads share the OS page cache
        if background_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("sqlite_write", False)
        # Straight to the driver: BEGIN is the statement run most often (every transaction),
        # and SQLAlchemy's statement path costs more than SQLite's work for it.
        driver = connection.connection.driver_connection
        assert driver is not None, "a transaction begins on a live connection"
        driver.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Checkpointer(Periodic):
    """SQLite WAL checkpoints on a thread of their own, off the commit path.

    By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: with
    the pages a FHIR write touches (resource, history and index B-trees), one write in a dozen
    paid 3.5 ms more (measured on HL7 orders: p95 4.3 ms against a p50 of 1.2 ms). Here a
    PASSIVE checkpoint every ``interval`` seconds copies those pages without blocking writers
    or readers (SQLite releases the GIL meanwhile), and SQLite starts the WAL over at the next
    write once a checkpoint has caught up. Under sustained writes it never quite catches up, so
    past ``restart_pages`` a RESTART checkpoint finishes the job: it holds writers back while it
    copies the few pages left, for at most ``restart_wait`` seconds (then it tries again next
    round). Stopping runs a last checkpoint.
    """

    name = "sqlite-checkpoint"

    def __init__(self, engine: Engine, interval: float = 1.0, restart_pages: int = 8192,
                 restart_wait: float = 0.1) -> None:
        super().__init__(interval, join_timeout=30)
        self.database = str(engine.url.database)
        self.restart_pages = restart_pages
        self.restart_wait = restart_wait
        self._conn: sqlite3.Connection | None = None

    def round(self) -> None:
        if self._conn is None:  # its own connection, on its own thread
            self._conn = self._connect()
        self.checkpoint(self._conn)

    def stop(self) -> None:
        super().stop()
        self.checkpoint(self._conn)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def checkpoint(self, conn: sqlite3.Connection | None = None) -> None:
        own = conn is None
        try:
            conn = conn or self._connect()
            _, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if pages >= self.restart_pages:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:  # busy or gone: the next round tries again
            log.warning("WAL checkpoint failed", exc_info=True)
        finally:
            if own and conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.database, timeout=self.restart_wait,
                               check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={int(self.restart_wait * 1000)}")
        return conn
