"""An LRU of decoded frames and renderings, bounded in bytes, with single-flight.

Twenty viewers asking for the same frame at once cause one decode: the first request computes,
the others wait for its result (``single_flight``), and later requests find it in the LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class FrameCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._flights: dict[Hashable, threading.Event] = {}
        self.computed = 0  # how many values were computed (for tests and metrics)

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes // 4:
            return  # one huge value would push everything else out
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)

    def single_flight(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """The cached value, or compute it once however many threads ask at the same time."""
        while True:
            value = self.get(key)
            if value is not None:
                return value
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = threading.Event()
            assert flight is not None
            if not leader:
                flight.wait(timeout=60)
                continue
            try:
                value = compute()
                self.computed += 1
                self.put(key, value)
                return value
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                flight.set()
