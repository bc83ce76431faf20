"""Which process of a cluster runs the listeners and the queue senders.

HTTP is served by every worker; the MLLP and DIMSE listeners, the send queues' senders and the
periodic checks must run once (two DIMSE listeners cannot share a port; two overdue checks would
flag twice). The processes sharing a database elect one with a lock the database or the
operating system releases by itself when the holder dies:

- **PostgreSQL**: a session advisory lock (``pg_try_advisory_lock``) held on a connection kept
  for that purpose. A killed process's connection closes, the server drops its locks, and the
  next process that asks (every ``POLL`` seconds) becomes the leader: takeover within a few
  seconds, no lease to expire, no clock to trust.
- **SQLite** (one host): an exclusive ``flock`` on ``<data_dir>/listeners.lock``, released by the
  kernel when the process ends.

A leader checks its hold at every poll (PostgreSQL: the lock's connection still answers); if it
lost it (the database restarted), it stops its listeners before anyone else may start them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

log = logging.getLogger("sonobridge.app.leader")

POLL = 2.0  # seconds between attempts (and between checks of a held lock)
LOCK_NAME = "sonobridge:listeners"


class Leadership:
    """One process's claim to be the leader (see the module docstring)."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.lock_path = data_dir / "listeners.lock"
        self._conn: Any = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def try_acquire(self) -> bool:
        """Become the leader if nobody is; ``True`` when this process is (now or already)."""
        if self.held:
            return self.still_held()
        if self.sqlite:
            return self._flock()
        conn = self.engine.connect()
        try:
            got = conn.execute(text(
                "SELECT pg_try_advisory_lock(hashtext(current_schema() || :name))"),
                {"name": LOCK_NAME}).scalar_one()
            conn.commit()  # the lock is the session's, not the transaction's
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def _flock(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def still_held(self) -> bool:
        """Whether the hold is intact; if not, it is given up (the caller stops listening)."""
        if self._fd is not None:
            return True  # a flock lasts while the descriptor is open
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1")).scalar_one()
            self._conn.commit()
            return True
        except Exception:
            log.warning("the database connection holding the listeners' lock was lost: "
                        "stopping the listeners (another process may take them over)")
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text(
                    "SELECT pg_advisory_unlock(hashtext(current_schema() || :name))"),
                    {"name": LOCK_NAME})
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
