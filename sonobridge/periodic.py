"""A background round every few seconds: the senders of the bridges' persistent queues.

Each queue (ORU^R01 out, DICOM forwarding, Storage Commitment reports) is a table; a sender
runs one round (claim what is due, send it) per interval on a daemon thread. A round that
raises is logged and the next one runs: the database or the peer may be briefly away.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("sonobridge.periodic")


class Periodic:
    """Subclasses name the thread and define ``round``; ``stopping`` tells a long round to
    end early."""

    name = "periodic"

    def __init__(self, interval: float = 1.0, join_timeout: float = 60.0) -> None:
        self.interval = interval
        self.join_timeout = join_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def round(self) -> object:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except Exception:
                log.exception("%s: round failed", self.name)
            self._stop.wait(self.interval)
