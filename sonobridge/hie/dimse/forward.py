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

from sonobridge.config import ConfigError, Settings
from sonobridge.core.events import Events, InstanceStored
from sonobridge.core.services import Core
from sonobridge.hie.dimse import scu
from sonobridge.hie.dimse.peers import load_peers
from sonobridge.hie.dimse.retrieve import Stored
from sonobridge.periodic import Periodic
from sonobridge.store import queues
from sonobridge.store.dicom.index import StoredInstance
from sonobridge.store.resources import Writer
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

    def __init__(self, settings: Settings, queue: queues.Queue) -> None:
        self.peers = load_peers(settings)
        self.rules = parse_rules(settings.dicom_forward, self.peers)
        self.queue = queue

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
            self.queue.enqueue(writer.conn, sop_uid=sop_uid, destination=destination,
                               status="queued", attempts=0, next_attempt=now, created=now,
                               updated=now)


class ForwardSender(Periodic):
    name = "dicom-forward"

    def __init__(self, core: Core, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.core = core
        self.peers = load_peers(core.settings)
        self.queue = queues.dicom_forwards(core.store.engine)

    def round(self) -> int:
        return self.send_due()

    def send_due(self) -> int:
        """Claim what is due (a lease: another process running a sender on the same database
        skips it, and takes it over if this one dies before it is done), then send it."""
        rows = self.queue.claim_due(now_us(), 200, "sop_uid", "destination", "attempts")
        if not rows:
            return 0
        held = {i.sop_uid: i for i in self.core.archive.retrieve_matches(
            sop_uids=sorted({row.sop_uid for row in rows}))}
        by_destination: dict[str, list[Any]] = {}
        for row in rows:
            by_destination.setdefault(row.destination, []).append(row)
        for destination, batch in by_destination.items():
            self._send(destination, batch, held)
        return len(rows)

    def _send(self, destination: str, batch: list[Any], held: dict[str, StoredInstance]
              ) -> None:
        peer = self.peers.get(destination)
        instances = [Stored.of(held[r.sop_uid]) for r in batch if r.sop_uid in held]
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
        changes = []
        for row in batch:
            attempts = row.attempts + 1
            values: dict[str, Any]
            if row.sop_uid not in held:
                values = {"status": "failed", "error": "the instance was deleted"}
            elif error is None and row.sop_uid in results and results[row.sop_uid] is None:
                values = {"status": "sent", "error": None}
            else:
                reason = error or results.get(row.sop_uid) or "not sent"
                values = {"status": "retry", "error": reason[:1024],
                          "next_attempt": queues.retry_at(attempts, stamp)}
            FORWARDED.labels(destination, values["status"]).inc()
            changes.append((row.id, {"attempts": attempts, "updated": stamp, **values}))
        self.queue.set_each(changes)
