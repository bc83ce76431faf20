"""Forwarding: routing rules send received objects on to remote AEs (a PACS, an archive).

Rules come from SONOBRIDGE_DICOM_FORWARD: ``DEST[:key=value,...]`` separated by ``;``, keys
``modality``, ``source`` (the calling AE, ``STOW-RS`` or ``import``; ``*`` wildcards) and
``sop_class``; e.g. ``PACS:modality=US;ARCHIVE``. A matching object is queued in the same
transaction that stores it, then sent in its stored transfer syntax by a sender thread, with
retry and backoff until the destination takes it.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert, select, update

from sonobridge.config import ConfigError, Settings
from sonobridge.core.events import Events, InstanceStored
from sonobridge.hie.dimse import scu
from sonobridge.hie.dimse.peers import load_peers
from sonobridge.hie.dimse.retrieve import Stored
from sonobridge.periodic import Periodic
from sonobridge.store import queues
from sonobridge.store.resources import Writer
from sonobridge.store.tables import dicom_forwards as F
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.timeutil import now_us

FORWARDED = Counter("sonobridge_dicom_forwarded_total", "DICOM objects forwarded, by outcome",
                    ["destination", "outcome"])


@dataclass(frozen=True)
class Rule:
    destination: str
    conditions: dict[str, str] = field(default_factory=dict)

    def matches(self, facts: dict[str, str]) -> bool:
        return all(fnmatch.fnmatchcase(facts.get(key, ""), pattern)
                   for key, pattern in self.conditions.items())


def parse_rules(text: str, peers: dict[str, Any]) -> list[Rule]:
    rules = []
    for item in (p.strip() for p in text.split(";") if p.strip()):
        destination, _, conditions = item.partition(":")
        if destination not in peers:
            raise ConfigError(f"forwarding rule {item!r}: {destination!r} is not a known peer "
                              "(SONOBRIDGE_DICOM_PEERS)")
        parsed: dict[str, str] = {}
        for condition in (c.strip() for c in conditions.split(",") if c.strip()):
            key, eq, value = condition.partition("=")
            if not eq or key not in ("modality", "source", "sop_class"):
                raise ConfigError(f"forwarding rule {item!r}: conditions are modality=, "
                                  "source= or sop_class=")
            parsed[key] = value
        rules.append(Rule(destination, parsed))
    return rules


class Forwarder:
    """Queues matching objects: listens to ``InstanceStored``, told inside the transaction
    that stores the object, so that the queue row commits with it."""

    def __init__(self, settings: Settings) -> None:
        self.peers = load_peers(settings)
        self.rules = parse_rules(settings.dicom_forward, self.peers)

    def listen(self, events: Events) -> None:
        events.listen(InstanceStored, self._stored)

    def _stored(self, event: InstanceStored) -> None:
        self.enqueue(event.writer, event.sop_uid, event.sop_class_uid, event.modality,
                     event.source)

    def enqueue(self, writer: Writer, sop_uid: str, sop_class: str, modality: str,
                source: str) -> None:
        facts = {"modality": modality, "sop_class": sop_class,
                 "source": source.removeprefix("C-STORE ").split(" ")[0]}
        now = time.time_ns() // 1000
        for destination in {rule.destination for rule in self.rules if rule.matches(facts)}:
            if facts["source"] == destination:
                continue  # never send an object back to where it came from
            writer.conn.execute(insert(F).values(
                sop_uid=sop_uid, destination=destination, status="queued", attempts=0,
                next_attempt=now, created=now, updated=now))


class ForwardSender(Periodic):
    name = "dicom-forward"

    def __init__(self, core: Any, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.core = core
        self.peers = load_peers(core.settings)

    def round(self) -> int:
        return self.send_due()

    def send_due(self) -> int:
        """Claim what is due (a lease: another process running a sender on the same database
        skips it, and takes it over if this one dies before it is done), then send it."""
        now = now_us()
        due = (F.c.status.in_(("queued", "retry", "sending")), F.c.next_attempt <= now)
        with self.core.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            ids = queues.claim(conn, F, due, now, 200)
            if not ids:
                return 0
            rows = conn.execute(
                select(F.c.id, F.c.sop_uid, F.c.destination, F.c.attempts, I.c.study_uid,
                       I.c.sop_class_uid, I.c.transfer_syntax, I.c.blob_key)
                .select_from(F.join(I, I.c.sop_uid == F.c.sop_uid, isouter=True))
                .where(F.c.id.in_(ids)).order_by(F.c.id)).all()
        by_destination: dict[str, list[Any]] = {}
        for row in rows:
            by_destination.setdefault(row.destination, []).append(row)
        for destination, batch in by_destination.items():
            self._send(destination, batch)
        return len(rows)

    def _send(self, destination: str, batch: list[Any]) -> None:
        peer = self.peers.get(destination)
        instances = [Stored(r.sop_uid, r.study_uid, r.sop_class_uid, r.transfer_syntax,
                            r.blob_key) for r in batch if r.blob_key is not None]
        results: dict[str, str | None] = {}
        error = None
        if peer is None:
            error = f"{destination} is no longer a known peer"
        elif instances:
            try:
                results = scu.store(self.core.settings.dicom_aet, peer, instances,
                                    self.core.blobs)
            except (scu.ScuError, OSError, RuntimeError) as exc:
                error = str(exc)[:1024]
        stamp = time.time_ns() // 1000
        with self.core.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            for row in batch:
                attempts = row.attempts + 1
                if row.blob_key is None:
                    values = {"status": "failed", "error": "the instance was deleted"}
                elif error is None and row.sop_uid in results and results[row.sop_uid] is None:
                    values = {"status": "sent", "error": None}
                else:
                    reason = error or results.get(row.sop_uid) or "not sent"
                    values = {"status": "retry", "error": reason[:1024],
                              "next_attempt": queues.retry_at(attempts, stamp)}
                FORWARDED.labels(destination, values["status"]).inc()
                conn.execute(update(F).where(F.c.id == row.id).values(
                    attempts=attempts, updated=stamp, **values))
