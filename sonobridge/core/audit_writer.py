"""The audit trail's writer as a process of its own (``SONOBRIDGE_AUDIT_WRITER``).

An AuditEvent for a read is a FHIR resource: built, indexed for the ATNA/BALP searches,
hash-chained and inserted, about 250 µs of Python for each event. Written by a thread of the
server's process, that time is taken from the requests, which share the interpreter (the GIL):
with one event per FHIR read it cost a third of read throughput. The server's process now
only gathers the records (``core/audit.py``: windows of DICOM reads, batches) and sends each
batch down a pipe, a few microseconds an event; this process turns them into AuditEvents in
the same store, with the same chain (on PostgreSQL the chain's advisory lock orders the
appends of every process; on SQLite the write lock does), on another core.

Nothing is lost on a clean shutdown: ``flush`` waits until every batch sent is committed.
If the server's process is killed, this process still reads to the end of the pipe and
writes what it got, then exits; if this process dies, the trail writes in the server's
process again (``AuditTrail._write``) and the batches that were in the pipe at that moment
are lost (at most the last batch window; ``docs/security.md``).

A process is started with ``spawn`` (never ``fork``: the server has threads and open
database connections).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("sonobridge.audit")

_FLUSH = "flush"
_STOP = "stop"


class WriterProcess:
    """The parent's handle: send batches, wait for them to be written, stop."""

    START_SECONDS = 60.0

    def __init__(self, database_url: str, syslog: str = "") -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._lock = threading.Lock()
        self.process = context.Process(target=main, args=(child, database_url, syslog),
                                       name="sonobridge-audit-writer", daemon=True)
        self.process.start()
        child.close()
        # The child says it is ready once its store is open: a batch sent before that would
        # only wait in the pipe, but a child that cannot start must fail here, loudly.
        if not self._pipe.poll(self.START_SECONDS):
            self.process.kill()
            raise RuntimeError("the audit writer process did not start")
        ready = self._pipe.recv()
        if ready != "ready":
            self.process.join(5)
            raise RuntimeError(f"the audit writer process could not start: {ready}")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def write(self, batch: list[Any]) -> None:
        """Hand ``batch`` (``Record`` objects) to the writer; raises ``OSError`` if it is
        gone (the caller then writes the batch itself)."""
        with self._lock:
            self._pipe.send(batch)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything sent so far is committed."""
        with self._lock:
            try:
                self._pipe.send(_FLUSH)
                while self._pipe.poll(timeout):
                    if self._pipe.recv() == _FLUSH:
                        return True
            except (OSError, EOFError):
                pass
        log.warning("the audit writer process did not confirm its writes")
        return False

    def stop(self) -> None:
        self.flush()
        with self._lock, contextlib.suppress(OSError):
            self._pipe.send(_STOP)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        self._pipe.close()


def main(pipe: Connection, database_url: str, syslog: str) -> None:
    """The writer process: the store, the search parameters (reloaded when they change),
    and the trail's own ``_write`` for each batch that arrives."""
    from sonobridge.core.audit import AuditTrail
    from sonobridge.core.search.registry import Registry
    from sonobridge.core.services import load_custom_params
    from sonobridge.store.db import make_engine
    from sonobridge.store.resources import ResourceStore

    try:
        engine = make_engine(database_url)
        registry = Registry()
        store = ResourceStore(engine, indexer=registry.index_rows)
        load_custom_params(store, registry)
        trail = AuditTrail(store, syslog=syslog)
    except Exception as exc:  # reported to the parent, which refuses to go on without it
        pipe.send(f"{type(exc).__name__}: {exc}")
        return
    pipe.send("ready")
    seen = custom_state(store)
    while True:
        try:
            item = pipe.recv()
        except (EOFError, OSError):  # the server's process is gone: all it sent is written
            break
        if item == _STOP:
            break
        if item == _FLUSH:
            pipe.send(_FLUSH)
            continue
        state = custom_state(store)  # a custom SearchParameter on AuditEvent, added since
        if state != seen:
            load_custom_params(store, registry)
            seen = state
        trail._write(item)
    engine.dispose()


def custom_state(store: Any) -> tuple[object, ...]:
    from sqlalchemy import func, select

    from sonobridge.store.tables import resources as R

    with store.reader.connect() as conn:
        return tuple(conn.execute(select(func.max(R.c.last_updated), func.count()).where(
            R.c.res_type == "SearchParameter")).one())
