"""The profiles and value sets the server holds: the guide's own (given at start by the app,
``app/compose.py``, since the guide lives in ``conformance/``, which the core may not import)
and every StructureDefinition, ValueSet and CodeSystem in the resource store (``sonobridge ig
load``, or a client's PUT).

Stored definitions are read in one query when first needed and again after a transaction that
wrote one of those types commits (``ResourceStore.after_commit``), so a profile loaded from a
package is enforced from the next write on, in this process. Another process (``sonobridge ig
load`` beside a running server, the other workers of a PostgreSQL cluster) is noticed by a
cheap check at most every ``REFRESH_SECONDS``: the count and latest ``last_updated`` of the
definition rows (an indexed query), and a reload when they moved. A
stored definition with the same canonical as the guide's replaces it (what a client put last
is what the server says it holds). Compiled profiles and expanded value sets are cached until
the next reload.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select

from sonobridge import jsonio
from sonobridge.core.errors import Issue
from sonobridge.core.profiles.terminology import Codes, canonical, expand
from sonobridge.core.profiles.validator import Context, Profile, compile_profile, validate
from sonobridge.store.resources import ResourceStore, Writer
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

KINDS = frozenset({"StructureDefinition", "ValueSet", "CodeSystem"})
REFRESH_SECONDS = 5.0


class ProfileRegistry:
    def __init__(self, store: ResourceStore | None = None) -> None:
        self.store = store
        self._guide: dict[str, dict[str, Any]] = {}
        self._stored: dict[str, dict[str, Any]] | None = None
        self._profiles: dict[str, Profile | None] = {}
        self._codes: dict[str, Codes | None] = {}
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    # ------------------------------------------------------------------ contents

    def add(self, resources: Iterable[dict[str, Any]]) -> int:
        """Hold these definitions in memory (the guide's); returns how many were taken."""
        taken = 0
        with self._lock:
            for res in resources:
                if res.get("resourceType") in KINDS and isinstance(res.get("url"), str):
                    self._guide[canonical(res["url"])] = res
                    taken += 1
            self._profiles.clear()
            self._codes.clear()
        return taken

    def reload(self) -> None:
        """Forget what was read from the store (it is read again when next needed)."""
        with self._lock:
            self._stored = None
            self._profiles.clear()
            self._codes.clear()

    def after_commit(self, writer: Writer) -> None:
        if writer.types_written & KINDS:
            self.reload()

    def _changed_elsewhere(self) -> bool:
        """Whether another process wrote a definition since the last load (checked at most
        every ``REFRESH_SECONDS``)."""
        now = time.monotonic()
        if self.store is None or now - self._checked < REFRESH_SECONDS:
            return False
        self._checked = now
        stamp = self._read_stamp()
        return stamp != self._stamp

    def _read_stamp(self) -> tuple[int, int]:
        assert self.store is not None
        stmt = select(func.count(), func.max(R.c.last_updated)).where(
            R.c.res_type.in_(sorted(KINDS)))
        with self.store.reader.connect() as conn:
            count, latest = conn.execute(stmt).one()
        return int(count or 0), int(latest or 0)

    def _load_stored(self) -> dict[str, dict[str, Any]]:
        stored = self._stored
        if stored is not None and not self._changed_elsewhere():
            return stored
        self._profiles.clear()
        self._codes.clear()
        out: dict[str, dict[str, Any]] = {}
        if self.store is not None:
            self._stamp = self._read_stamp()
            self._checked = time.monotonic()
            stmt = select(V.c.content).select_from(
                R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id))).where(
                R.c.res_type.in_(sorted(KINDS)), R.c.deleted.is_(False))
            with self.store.reader.connect() as conn:
                for row in conn.execute(stmt):
                    res = jsonio.loads(row.content)
                    if isinstance(res, dict) and isinstance(res.get("url"), str):
                        out[canonical(res["url"])] = res
        self._stored = out
        return out

    def _fresh(self) -> None:
        with self._lock:
            self._load_stored()

    def resource(self, url: str) -> dict[str, Any] | None:
        """The held definition with this canonical (a stored one before the guide's)."""
        url = canonical(url)
        with self._lock:
            found = self._load_stored().get(url)
        return found if found is not None else self._guide.get(url)

    def profile(self, url: str) -> Profile | None:
        """The compiled profile (a StructureDefinition with a snapshot), or ``None``."""
        url = canonical(url)
        self._fresh()
        if url in self._profiles:
            return self._profiles[url]
        sd = self.resource(url)
        compiled = compile_profile(sd) if sd is not None and \
            sd.get("resourceType") == "StructureDefinition" else None
        self._profiles[url] = compiled
        return compiled

    def codes(self, url: str) -> Codes | None:
        """The codes of a held value set, or ``None`` (unknown, or not listable)."""
        url = canonical(url)
        self._fresh()
        if url in self._codes:
            return self._codes[url]
        vs = self.resource(url)
        found = expand(vs, self.resource) if vs is not None and \
            vs.get("resourceType") == "ValueSet" else None
        self._codes[url] = found
        return found

    def type_of(self, url: str) -> str | None:
        """The resource type a held profile constrains (for reference targets)."""
        sd = self.resource(url)
        if sd is None:
            return None
        kind = sd.get("type")
        return kind if isinstance(kind, str) else None

    def supported_profiles(self) -> dict[str, list[str]]:
        """Resource type -> canonicals of the resource profiles held (CapabilityStatement
        ``supportedProfile``)."""
        with self._lock:
            everything = {**self._guide, **self._load_stored()}
        out: dict[str, list[str]] = {}
        for url, res in sorted(everything.items()):
            if res.get("resourceType") == "StructureDefinition" and \
                    res.get("kind") == "resource" and res.get("derivation") == "constraint" \
                    and isinstance(res.get("type"), str):
                out.setdefault(res["type"], []).append(url)
        return out

    # ------------------------------------------------------------------ validation

    def validate(self, resource: dict[str, Any], url: str) -> list[Issue] | None:
        """The issues of ``resource`` against the profile ``url``; ``None`` when the server
        does not hold that profile."""
        profile = self.profile(url)
        if profile is None:
            return None
        ctx = Context(self.profile, self.codes, self.type_of, resource)
        return validate(resource, profile, ctx)

    def claimed(self, resource: dict[str, Any]) -> list[str]:
        """The canonicals in ``meta.profile``."""
        meta = resource.get("meta")
        if not isinstance(meta, dict):
            return []
        return [p for p in meta.get("profile", []) or [] if isinstance(p, str)]
