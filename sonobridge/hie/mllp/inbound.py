"""One inbound HL7 v2 message, from raw bytes to ACK bytes.

The message's header is read, the sender checked, the message applied through the core
(``hie/mllp/apply.py``) and logged with its ACK exactly once (``core/messages.py``: a resend
gets the stored ACK; a refused message is kept without one, so that a resend is tried
again). Every message is told to the audit trail: an applied one in its own transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter

from sonobridge.core.errors import CoreError
from sonobridge.core.events import Answered
from sonobridge.core.policy import Caller
from sonobridge.core.services import Core
from sonobridge.hie.mllp.apply import Applier, sender_policy
from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error

log = logging.getLogger("sonobridge.hl7")

MESSAGES = Counter("sonobridge_hl7_messages_total", "HL7 v2 messages received, by ACK code",
                   ["type", "ack"])


class Inbound:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.applier = Applier(core)
        self.receiving = core.settings.hl7_receiving_application
        self.senders = {s.strip() for s in core.settings.hl7_senders.split(",") if s.strip()}

    def _caller(self, sender: str, peer: str) -> Caller:
        return self.core.caller(sender_policy(sender), peer.rsplit(":", 1)[0], audited=False)

    def handle(self, raw: bytes, peer: str = "") -> bytes:
        now = time.time_ns() // 1000
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        try:
            header = hl7v2.header_fields(raw)
        except HL7Error as exc:
            # No MSH: still logged, answered AR with a minimal header.
            self._log_unusable(raw, peer, now, str(exc))
            MESSAGES.labels("unknown", "AR").inc()
            fake = [b"MSH", b"|", b"^~\\&"]
            return hl7v2.ack(fake, "AR", str(exc), exc, self._control_id(), stamp).encode()
        field = [f.decode("ascii", "replace") for f in header]
        sender = field[3] if len(field) > 3 else ""
        facility = field[4] if len(field) > 4 else ""
        control = (field[10] if len(field) > 10 else "").strip() or \
            f"no-id-{uuid.uuid4().hex}"  # refused below; the key only keeps it apart
        kind = field[9].replace("^", "_")[:32] if len(field) > 9 else ""
        key = {"app": sender[:227], "facility": facility[:227], "control": control[:199]}
        codec = "ascii"
        log_row = {"direction": "in", "peer": peer[:255], "sending_app": key["app"],
                   "sending_facility": key["facility"], "control_id": key["control"],
                   "message_type": kind, "raw": raw, "attempts": 1, "received": now}
        caller = self._caller(sender, peer)
        try:
            hl7v2.check_header(header)
            self._check_size(raw)
            text, codec = hl7v2.decode(raw)
            message = hl7v2.parse(text)
            receiving = field[5] if len(field) > 5 else ""
            if self.receiving and receiving != self.receiving:
                raise HL7Error(f"this is {self.receiving}, not {receiving!r} (MSH-5)", "207",
                               ("MSH", 1, 5), reject=True)
            if self.senders and sender not in self.senders:
                raise HL7Error(f"sending application {sender!r} (MSH-3) is not one this "
                               "server takes messages from", "207", ("MSH", 1, 3), reject=True)
            done: list[str] = []

            def work(writer: Any) -> tuple[bytes, dict[str, Any]]:
                applied = self.applier.apply(writer, message, caller)
                ack = hl7v2.ack(header, "AA", "", None, self._control_id(), stamp)
                data = ack.encode(codec or "utf-8", "replace")
                if self.core.events.wants(Answered):  # the message's one event, with its change
                    self.core.events.emit(self._event(
                        caller, kind, control, "0", applied.text, applied.patient,
                        applied.resource, writer))
                done.append(applied.text)
                return data, {"status": "applied", "ack": data, "charset": codec,
                              "error": applied.text[:1024], "updated": time.time_ns() // 1000}

            answer = self.core.messages.apply(key, log_row, work)
            if answer.resend:
                return self._resend(answer.ack, kind, control, peer)
            MESSAGES.labels(kind, "AA").inc()
            log.info("HL7 %s %s from %s applied: %s", kind, control, peer, done[0])
            return answer.ack
        except CoreError as exc:  # the same message on another connection, just now
            if exc.status != 409:
                raise
            return self._busy(header, control, stamp)
        except HL7Error as exc:
            error = exc
        except Exception as exc:  # a bug or the database: AR (HL7 v2.5 2.9.2.2: not the
            # message's fault, try again later), and the raw message is kept
            log.exception("HL7 %s %s from %s failed", kind, control, peer)
            error = HL7Error(f"application internal error: {type(exc).__name__}", "207",
                             reject=True)
        code = "AR" if error.reject else "AE"
        status = "rejected" if error.reject else "error"
        text_error = str(error)
        ack = hl7v2.ack(header, code, text_error, error, self._control_id(), stamp)
        data = ack.encode(codec or "utf-8", "replace")
        # Kept without its ACK: a resend after the cause is fixed (e.g. the order it cancels
        # has arrived) is applied then.
        failed = {**log_row, "status": status, "charset": codec, "error": text_error[:1024],
                  "updated": time.time_ns() // 1000}
        before = self.core.messages.refused(key, failed)
        if before is not None:  # answered before: that answer holds
            return self._resend(before, kind, control, peer)
        MESSAGES.labels(kind, code).inc()
        log.info("HL7 %s %s from %s: %s %s", kind, control, peer, code, text_error)
        self.core.events.emit(self._event(caller, kind, control,
                                          "4" if error.reject else "8", f"{code}: {text_error}"))
        return data

    def _check_size(self, raw: bytes) -> None:
        """Segments and fields within the limits, counted on the bytes before anything is
        decoded (a 25 MB field must be refused in milliseconds, not parsed)."""
        settings = self.core.settings
        segments = raw.replace(b"\n", b"\r").split(b"\r")
        if len(segments) > settings.hl7_max_segments:
            raise HL7Error(f"the message has {len(segments):,} segments; at most "
                           f"{settings.hl7_max_segments:,} are taken", "207", reject=True)
        limit = settings.hl7_max_field_size
        for number, segment in enumerate(segments, 1):
            if len(segment) > limit:
                longest = max(segment.split(b"|"), key=len)
                if len(longest) > limit:
                    name = segment[:3].decode("ascii", "replace")
                    raise HL7Error(f"a field of segment {number} ({name}) holds "
                                   f"{len(longest):,} bytes; at most {limit:,} are taken",
                                   "207", (name, 1, 1), reject=True)

    @staticmethod
    def _resend(ack: bytes, kind: str, control: str, peer: str) -> bytes:
        log.info("HL7 %s %s from %s: a resend, answered with the stored ACK", kind, control,
                 peer)
        MESSAGES.labels(kind, "resend").inc()
        return ack

    @staticmethod
    def _event(caller: Caller, kind: str, control: str, outcome: str, detail: str,
               patient: str | None = None, resource: str | None = None,
               writer: Any = None) -> Answered:
        return Answered(caller, "hl7-in", "C" if outcome == "0" else "E", kind or "unknown",
                        outcome=outcome, patient=patient, resource=resource,
                        detail=f"MSH-10 {control}: {detail}"[:500], writer=writer)

    def _busy(self, header: list[bytes], control: str, stamp: str) -> bytes:
        error = HL7Error("the same message is being applied on another connection", "206")
        return hl7v2.ack(header, "AE", str(error), error, self._control_id(), stamp).encode()

    def unterminated(self, raw: bytes, peer: str) -> None:
        """A block cut short by the start of the next one: logged (nothing received is lost),
        never applied or acknowledged."""
        log.warning("MLLP from %s: %d bytes without <FS><CR> before the next <VT>; kept, not "
                    "acknowledged", peer, len(raw))
        MESSAGES.labels("unknown", "unterminated").inc()
        self._log_unusable(raw, peer, time.time_ns() // 1000,
                           "the block ended without <FS><CR>: a new <VT> started the next one")

    def _log_unusable(self, raw: bytes, peer: str, now: int, error: str) -> None:
        self.core.messages.keep({
            "direction": "in", "peer": peer[:255], "sending_app": "", "sending_facility": "",
            "control_id": f"no-msh-{uuid.uuid4().hex}", "message_type": "", "charset": "",
            "raw": raw, "status": "rejected", "error": error[:1024], "attempts": 1,
            "received": now, "updated": now})

    @staticmethod
    def _control_id() -> str:
        return uuid.uuid4().hex[:20]
