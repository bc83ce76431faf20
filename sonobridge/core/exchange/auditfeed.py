"""What the ATNA audit feed sends (``hie/syslog.py``), and how far it got.

The audit trail is already a durable, ordered queue: ``audit_log`` rows (``core/audit.py``)
are appended in the transaction of what they record and numbered by ``seq``. The feed reads
the rows after its cursor in order and, once the collector has them, moves the cursor. The
cursor is a ``Basic`` resource (``Basic/audit-feed-<collector>``, written on the server's
account and not itself audited, so that advancing it makes no new event to send) in the same
database as the trail: a restart, or another process taking over the cluster's duties,
resumes where the last one stopped. Delivery is at least once: the sender saves the
cursor at most once a second, so a crash sends what the last second sent again.

A collector the feed has never sent to starts at the trail's head (what happens from now on),
not at its first event: pointing the gateway at a new collector must not replay years of trail
in one go. ``sonobridge audit`` and the FHIR AuditEvent search serve the history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.tables import audit_log as AL

if TYPE_CHECKING:
    from sonobridge.core.services import Core

CURSOR_SYSTEM = "urn:sonobridge:audit-feed"


@dataclass(frozen=True)
class Entry:
    seq: int
    res_id: str
    event: bytes  # the AuditEvent JSON as stored and chained


class AuditFeed:
    """The trail as a queue for one collector (``target``, e.g. ``tls://host:6514``)."""

    def __init__(self, core: Core, target: str) -> None:
        self.core = core
        self.target = target
        self.cursor_id = "audit-feed-" + hashlib.sha256(target.encode()).hexdigest()[:16]
        # Not audited: moving the cursor must not make an event for the feed to send.
        self.caller: Caller = core.caller(core.server.policy, audited=False)

    def head(self) -> int:
        with self.core.store.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(AL.c.seq), 0))).scalar_one())

    def position(self) -> int:
        """The last ``seq`` the collector has; the head on first use (stored then)."""
        try:
            stored = self.core.resources.read(self.caller, "Basic", self.cursor_id)
        except CoreError:  # never written (404), or removed (410): start afresh
            stored = None
        if stored is not None and stored.content is not None:
            for ext in json_loads(stored.content).get("extension") or []:
                if ext.get("url") == f"{CURSOR_SYSTEM}#seq":
                    return int(ext.get("valueDecimal") or 0)
        start = self.head()
        self.advance(start)
        return start

    def after(self, seq: int, limit: int) -> list[Entry]:
        """Up to ``limit`` trail entries after ``seq``, oldest first."""
        with self.core.store.reader.connect() as conn:
            rows = conn.execute(select(AL.c.seq, AL.c.res_id, AL.c.event)
                                .where(AL.c.seq > seq).order_by(AL.c.seq).limit(limit)).all()
        return [Entry(int(r.seq), str(r.res_id), bytes(r.event)) for r in rows]

    def advance(self, seq: int) -> None:
        """Remember that the collector has everything up to ``seq``."""
        body: dict[str, Any] = {
            "resourceType": "Basic", "id": self.cursor_id,
            "code": {"coding": [{"system": CURSOR_SYSTEM, "code": "cursor",
                                 "display": "ATNA audit feed position"}]},
            "extension": [{"url": f"{CURSOR_SYSTEM}#target", "valueString": self.target},
                          {"url": f"{CURSOR_SYSTEM}#seq", "valueDecimal": seq}],
        }
        self.core.resources.update(self.caller, "Basic", self.cursor_id, body)
