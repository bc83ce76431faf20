"""View rows remembered by resource content, so that a resource read once is not read again.

The QC indicators run the same few shipped views over the same resources again and again: an
all-indicator report runs the report view for four indicators, a dashboard asks for the same
month every few minutes. A view's rows are a function of the resource alone when the view
reads nothing else (no ``now()``, no ``meta.versionId``/``meta.lastUpdated``, which the
content hash leaves out), so they are kept under the store's ``content_hash`` of the version
they came from (``resources.content_hash``: SHA-256 of the resource without the server's
stamps). A key never goes stale: a changed resource has another hash, and the same content
anywhere (another store, a restored backup) gives the same rows. Which rows a caller gets is
still decided by the store query (grants, compartment, period), the cache only spares reading
and evaluating the content of what matched.

Bounded (least recently used out first) by the number of resources held; thread-safe, since
one process serves requests on several threads. Kept small per resource: one bytes key (view
key and digest), a resource of one row (the usual case) held as that row's tuple, and the
short strings of the rows (codes, statuses, references shared by many resources) shared
through a bounded pool rather than held once per resource.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

Row = dict[str, Any]
# The rows of one resource, each as a tuple of column values in the view's column order.
Entry = tuple[tuple[Any, ...], ...]
SHARED_MAX = 24  # strings up to this length are shared (ids of patients, doctors, codes)
POOL_MAX = 200_000  # distinct shared strings kept (then the pool starts again)


class RowCache:
    """``(view key, content hash) -> rows``, least recently used out past ``capacity``.

    The view key must name one view's definition for the life of the cache (a shipped view's
    id); a view whose rows depend on more than the resource must not be cached."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # view key + NUL + digest -> the one row's tuple, or a list of row tuples (no row,
        # or several): one bytes key rather than a tuple of two objects.
        self._entries: OrderedDict[bytes, Any] = OrderedDict()
        self._prefixes: dict[str, bytes] = {}
        self._pool: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, view_key: str, digest: bytes) -> bytes:
        prefix = self._prefixes.get(view_key)
        if prefix is None:
            prefix = self._prefixes.setdefault(view_key, view_key.encode() + b"\0")
        return prefix + digest

    def get(self, view_key: str, digest: bytes) -> Entry | None:
        return self.get_many(view_key, [digest])[0]

    def get_many(self, view_key: str, digests: list[bytes | None]) -> list[Entry | None]:
        """``get`` for a batch (one lock, one prefix lookup): a year's evaluation asks for
        half a million entries."""
        prefix = self._key(view_key, b"")
        out: list[Entry | None] = []
        append = out.append
        with self._lock:
            entries = self._entries
            lookup, touch = entries.get, entries.move_to_end
            for digest in digests:
                if not digest:
                    append(None)
                    continue
                key = prefix + digest
                held = lookup(key)
                if held is None:
                    append(None)
                    continue
                touch(key)
                append(tuple(held) if isinstance(held, list) else (held,))
        return out

    def _shared(self, value: Any) -> Any:
        if type(value) is str and len(value) <= SHARED_MAX:
            found = self._pool.get(value)
            if found is not None:
                return found
            if len(self._pool) >= POOL_MAX:
                self._pool.clear()
            self._pool[value] = value
        return value

    def put(self, view_key: str, digest: bytes, columns: list[str], rows: list[Row],
            collections: bool = False) -> None:
        """Keep ``rows`` (a copy: a collection column's list is copied when ``collections``,
        so that the caller may change the rows it was given)."""
        if self.capacity <= 0:
            return
        with self._lock:
            shared = self._shared
            if collections:
                entry = tuple(tuple(list(value) if isinstance(value, list) else shared(value)
                                    for value in map(row.get, columns)) for row in rows)
            else:
                entry = tuple(tuple(map(shared, map(row.get, columns))) for row in rows)
            held: Any = entry[0] if len(entry) == 1 else list(entry)
            key = self._key(view_key, digest)
            self._entries[key] = held
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._pool.clear()
