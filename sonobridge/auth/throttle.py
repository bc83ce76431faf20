"""Failed sign-ins slow the next ones down; they never lock an account.

A hard lock (five failures, fifteen minutes) let anyone lock anyone out, and answered
differently for accounts that exist. Instead every failure for a user name, known or not, is
counted twice: for that name from that address, and for that name from anywhere. Past a few
free tries, the next try waits (1, 2, 4… up to 300 seconds from one address; 10 seconds per
try once a name has failed twenty times from anywhere): guessing gets slow, and a user signing
in from elsewhere is never stopped by someone else's guesses. Every answer while waiting is
the same, whether the name exists or not.

Counts live in the process (a restart forgets them; each worker counts its own), which is
enough to make guessing slow: the point is the delay, not a record (the audit trail keeps
every failure).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

FREE = 3  # failures from one address before the first wait
MAX_WAIT = 300.0
NAME_FREE = 20  # failures of a name from anywhere before every try waits
NAME_WAIT = 10.0
FORGET_AFTER = 3600.0  # an hour without failures: counted from zero again
MAX_KEYS = 100_000


@dataclass
class _Count:
    failures: int = 0
    until: float = 0.0
    last: float = 0.0


class Throttle:
    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], _Count] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, source: str) -> tuple[tuple[str, str], tuple[str, str]]:
        name = username.strip().lower()[:64]
        return (source, name), ("*", name)

    def wait(self, username: str, source: str, now: float | None = None) -> float:
        """Seconds before this name may be tried from this address (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            found = [self._counts.get(key) for key in self._keys(username, source)]
        return max((c.until - now for c in found if c is not None), default=0.0)

    def failed(self, username: str, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        pair, anywhere = self._keys(username, source)
        with self._lock:
            if len(self._counts) > MAX_KEYS:
                self._forget(now)
            for key in (pair, anywhere):
                count = self._counts.setdefault(key, _Count())
                if now - count.last > FORGET_AFTER:
                    count.failures = 0
                count.failures += 1
                count.last = now
                if key is pair and count.failures >= FREE:
                    count.until = now + min(2.0 ** (count.failures - FREE), MAX_WAIT)
                elif key is anywhere and count.failures >= NAME_FREE:
                    count.until = now + NAME_WAIT

    def succeeded(self, username: str, source: str) -> None:
        pair, _ = self._keys(username, source)
        with self._lock:
            self._counts.pop(pair, None)

    def _forget(self, now: float) -> None:
        old = [k for k, c in self._counts.items() if now - c.last > FORGET_AFTER]
        for key in old:
            del self._counts[key]
