"""Results out: ORU^R01 to the HIS when a report for an ordered study becomes final.

The message is queued (``hl7_messages``, direction ``out``) in the same transaction as the
report change, so a final report always leaves a message behind, and the queue survives a
restart. A sender thread delivers it over MLLP, one destination at a time, and retries with
backoff (5 s doubling to one hour) until the destination answers; an AE/AR answer is kept as
failed with its error (``sonobridge mllp status``, ``/metrics``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from sonobridge.config import Settings
from sonobridge.core.events import Answered, Events, ResourceChanged
from sonobridge.core.policy import Policy
from sonobridge.core.services import Core
from sonobridge.jsonio import loads
from sonobridge.mappings.hl7v2 import CHARSETS, MSH18
from sonobridge.mappings.oru import members_of, oru_r01
from sonobridge.periodic import Periodic
from sonobridge.store import queues
from sonobridge.store.resources import StoredResource, Writer
from sonobridge.store.timeutil import now_us

log = logging.getLogger("sonobridge.hl7.out")

SENT = Counter("sonobridge_hl7_outbound_total", "HL7 v2 messages sent, by outcome",
               ["outcome"])
QUEUED = Gauge("sonobridge_hl7_outbound_queue", "HL7 v2 messages waiting to be sent")
REPORTABLE = {"final", "amended", "corrected", "appended"}
REJECT_ATTEMPTS = 8  # an AR is tried again up to this many times (about 10 minutes in all)


@dataclass(frozen=True)
class Destination:
    """``name@host:port[:charset=…]``. The HIS decodes what it receives by MSH-18, but many
    in service read only the character set they were built for (GB 18030 in much of China,
    8859/1 in older western systems), so the set is chosen per destination; UTF-8 by default."""

    name: str
    host: str
    port: int
    codec: str = "utf-8"


def load_destinations(settings: Any) -> list[Destination]:
    """SONOBRIDGE_HL7_DESTINATIONS, then the destinations file's lines."""
    from sonobridge.hie.addresses import entries

    return parse_destinations(",".join(entries(
        settings.hl7_destinations, settings.hl7_destinations_file, "HL7 destinations")))


def parse_destinations(text: str) -> list[Destination]:
    from sonobridge.config import ConfigError
    from sonobridge.hie.addresses import parse_address

    out = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        entry = parse_address(item, "an HL7 destination", "name@host:port[:charset=…]")
        codec = "utf-8"
        for key, value in entry.options.items():
            codec = CHARSETS.get(value.strip().upper(), "") if key == "charset" else ""
            if not codec:
                raise ConfigError(f"HL7 destination {entry.name}: unknown option "
                                  f"{key}={value!r} (known: charset=UTF-8|GB18030|8859/1|"
                                  "ASCII, as in MSH-18)")
        out.append(Destination(entry.name, entry.host, entry.port, codec))
    return out


class ResultsOutbox:
    """Queues ORU^R01 messages for final reports."""

    def __init__(self, settings: Settings, queue: queues.Queue) -> None:
        self.settings = settings
        self.queue = queue
        self.destinations = load_destinations(settings)
        self.sending = (settings.hl7_sending_application, settings.hl7_sending_facility)

    def listen(self, events: Events) -> None:
        """Queue with every change of a report, in its transaction (``ResourceChanged``)."""
        events.listen(ResourceChanged, self._changed)

    def _changed(self, event: ResourceChanged) -> None:
        if event.changed:
            self(event.writer, event.stored, event.resource)

    def __call__(self, writer: Writer, stored: StoredResource,
                 resource: dict[str, Any] | None) -> None:
        if stored.type != "DiagnosticReport" or resource is None or not self.destinations:
            return
        if resource.get("status") not in REPORTABLE:
            return
        order = self._order(writer, resource)
        if order is None:
            return  # not an ordered study: no HIS is waiting for it
        patient = self._ref(writer, (resource.get("subject") or order.get("subject") or {}
                                     ).get("reference", "")) or {}
        observations = [obs for ref in resource.get("result", [])
                        if (obs := self._ref(writer, ref.get("reference", ""))) is not None]
        # measurement groups hold the SR's measurements (hasMember): read them too
        members = members_of(observations, lambda ref: self._ref(writer, ref))
        now = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "+0000"
        # A report the HIS already has a result for is sent again as a correction (C), even
        # when it is still "final": only the first final result is F.
        subject = f"DiagnosticReport/{stored.id}"
        reported = self.queue.exists(writer.conn, subject=subject)
        for destination in self.destinations:
            control = uuid.uuid4().hex[:20]
            message = oru_r01(resource, order, patient, observations, control_id=control,
                              now=now, sending=self.sending, receiving=(destination.name, ""),
                              patient_id_system=self.settings.dicom_patient_id_system,
                              correction=reported,
                              charset=MSH18[destination.codec], members=members)
            stamp = time.time_ns() // 1000
            row = {"status": "queued", "charset": destination.codec}
            try:
                raw = message.encode(destination.codec)
            except UnicodeEncodeError as exc:
                # Never a result with "?" for a name or a finding: it is kept (in UTF-8) as
                # failed, with the reason, for `sonobridge mllp status` and the operator.
                raw = message.encode("utf-8")
                row = {"status": "failed", "charset": "utf-8",
                       "error": f"the result holds {exc.object[exc.start:exc.end]!r}, which "
                                f"{MSH18[destination.codec]} cannot carry: set "
                                f"charset=UTF-8 or GB18030 for {destination.name}"}
            self.queue.enqueue(
                writer.conn, direction="out", peer=f"{destination.host}:{destination.port}",
                sending_app=self.sending[0], sending_facility=self.sending[1],
                control_id=control, message_type="ORU_R01", raw=raw,
                destination=destination.name, subject=subject, attempts=0,
                next_attempt=stamp, received=stamp, updated=stamp, **row)
            if row["status"] == "failed":
                SENT.labels("failed").inc()

    def _ref(self, writer: Writer, reference: str) -> dict[str, Any] | None:
        parts = reference.split("/")
        if len(parts) < 2:
            return None
        stored = writer.read(parts[-2], parts[-1])
        if stored is None or stored.deleted or stored.content is None:
            return None
        return loads(stored.content)

    def _order(self, writer: Writer, report: dict[str, Any]) -> dict[str, Any] | None:
        for ref in report.get("basedOn", []):
            if "ServiceRequest/" in ref.get("reference", ""):
                found = self._ref(writer, ref["reference"])
                if found is not None:
                    return found
        for ref in report.get("imagingStudy", []):
            study = self._ref(writer, ref.get("reference", ""))
            for based in (study or {}).get("basedOn", []):
                found = self._ref(writer, based.get("reference", ""))
                if found is not None and found.get("resourceType") == "ServiceRequest":
                    return found
        return None


class OutboxSender(Periodic):
    """Delivers queued messages; one thread per process, any number of processes (each
    message is claimed before it is sent)."""

    name = "hl7-outbox"

    def __init__(self, core: Core, interval: float = 1.0, timeout: float = 30.0) -> None:
        super().__init__(interval, join_timeout=timeout + 5)
        self.core = core
        self.timeout = timeout
        self.queue = queues.hl7_outbox(core.store.engine)
        self.destinations = {d.name: d for d in
                             load_destinations(core.settings)}
        self.connections = Connections(timeout)

    def stop(self) -> None:
        super().stop()
        self.connections.close()

    def round(self) -> int:
        return self.send_due()

    def send_due(self) -> int:
        """Claim what is due (a lease: a sender in another process on the same database skips
        it, and takes it over if this one dies first), then deliver it, oldest first."""
        now = now_us()
        rows = self.queue.claim_due(now, 50, "raw", "destination", "attempts")
        QUEUED.set(self.queue.waiting())
        for index, row in enumerate(rows):
            if self.stopping:  # what was claimed and not sent is due again
                self.queue.set([r.id for r in rows[index:]], status="retry", next_attempt=now)
                break
            self._deliver(row)
        return len(rows)

    def _deliver(self, row: Any) -> None:
        destination = self.destinations.get(row.destination)
        attempts = row.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "updated": time.time_ns() // 1000}
        if destination is None:
            values.update(status="failed", error=f"destination {row.destination!r} is no "
                                                 "longer configured")
        else:
            try:
                ack = self.connections.exchange(destination.host, destination.port,
                                                bytes(row.raw))
                code, text = _ack_code(ack)
                values["ack"] = ack
                if code in ("AA", "CA"):
                    values.update(status="sent", error=None)
                elif code in ("AR", "CR") and attempts < REJECT_ATTEMPTS:
                    # A reject is about the receiver's state (down, busy, HL7 v2.5 2.9.2.2),
                    # not the message: the same bytes may be taken later. An AE is final.
                    values.update(status="retry", error=f"{code}: {text}"[:1024],
                                  next_attempt=queues.retry_at(attempts, now_us()))
                else:
                    values.update(status="failed", error=f"{code}: {text}"[:1024])
            except (OSError, ValueError) as exc:
                values.update(status="retry", error=f"{type(exc).__name__}: {exc}"[:1024],
                              next_attempt=queues.retry_at(attempts, now_us()))
        SENT.labels(values["status"]).inc()
        self.queue.set([row.id], **values)
        if values["status"] != "retry":
            caller = self.core.caller(Policy.system("sonobridge", row.destination or ""),
                                      destination.host if destination else "")
            self.core.events.emit(Answered(
                caller, "hl7-out", "R", "ORU_R01",
                outcome="0" if values["status"] == "sent" else "4",
                detail=f"{values['status']}: {values.get('error') or ''}"[:500]))


def send(host: str, port: int, message: bytes, timeout: float) -> bytes:
    """One MLLP exchange on a connection of its own (the command line's test sends)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return _exchange(sock, message)


def _exchange(sock: socket.socket, message: bytes) -> bytes:
    """The framed message out, its framed ACK back."""
    sock.sendall(b"\x0b" + message + b"\x1c\r")
    reply = b""
    while not reply.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("the connection closed before the ACK")
        reply += chunk
    return reply.strip(b"\x0b\x1c\r")


class Connections:
    """One open MLLP connection per destination, reused message after message (MLLP is a
    stream: a message, its ACK, the next), as interface engines expect — a connection per
    message costs a TCP handshake each and floods some receivers' logs.

    A connection the peer closed (seen before sending) or idle longer than ``idle`` is
    replaced by a new one; a kept connection that fails during the exchange is replaced and the
    message sent once more on the new one (a failure on a new connection is the queue's to
    retry). One sender thread owns an instance (no locking)."""

    def __init__(self, timeout: float, idle: float = 60.0) -> None:
        self.timeout = timeout
        self.idle = idle
        self._open: dict[tuple[str, int], tuple[socket.socket, float]] = {}
        self.opened = 0  # connections made (for the tests and the metrics)

    def exchange(self, host: str, port: int, message: bytes) -> bytes:
        key = (host, port)
        sock = self._reusable(key)
        fresh = sock is None
        if sock is None:
            sock = self._connect(key)
        try:
            reply = _exchange(sock, message)
        except (OSError, ValueError):
            self._close(key)
            if fresh:
                raise
            # A kept connection failed: most often the receiver closed it after its last ACK
            # and the close crossed this message (receivers that take one message per
            # connection). Once more on a new one. Should the receiver have taken the message
            # before failing, this is the resend the queue would make anyway, a moment later
            # (HL7 receivers recognise it by MSH-10).
            sock = self._connect(key)
            try:
                reply = _exchange(sock, message)
            except (OSError, ValueError):
                self._close(key)
                raise
        self._open[key] = (sock, time.monotonic())
        return reply

    def _reusable(self, key: tuple[str, int]) -> socket.socket | None:
        entry = self._open.get(key)
        if entry is None:
            return None
        sock, last = entry
        if time.monotonic() - last > self.idle or _closed_by_peer(sock):
            self._close(key)
            return None
        return sock

    def _connect(self, key: tuple[str, int]) -> socket.socket:
        sock = socket.create_connection(key, timeout=self.timeout)
        self.opened += 1
        self._open[key] = (sock, time.monotonic())
        return sock

    def _close(self, key: tuple[str, int]) -> None:
        entry = self._open.pop(key, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                entry[0].close()

    def close(self) -> None:
        for key in list(self._open):
            self._close(key)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closed (or reset) the connection while it was idle: readable with
    nothing to read. Anything readable between exchanges is unexpected: start afresh."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _ack_code(ack: bytes) -> tuple[str, str]:
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.decode("utf-8", "replace").split(segment[3:4].decode() or "|")
            return (fields[1] if len(fields) > 1 else "", fields[3] if len(fields) > 3 else "")
    raise ValueError("the reply has no MSA segment")


def status(core: Core) -> dict[str, Any]:
    """Counts by direction and state, and the latest failures (``sonobridge mllp status``)."""
    counts, problems = queues.hl7_log(core.store.engine).report(
        ["direction"], ["direction", "control_id", "message_type", "destination", "peer"],
        problems=("failed", "retry", "error", "rejected"))
    return {"counts": counts, "problems": problems}
