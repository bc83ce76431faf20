"""One inbound HL7 v2 message, from raw bytes to ACK bytes.

1. A message whose (sending application, facility, MSH-10) was answered before gets the ACK
   it got then and is not applied again (a sender resending after a dropped connection).
2. The message is applied and stored with its ACK in one transaction; one that cannot be
   applied is stored with its error (and no ACK, so that a resend is tried again). Either way
   it is committed before its ACK is written: a crash in between means no ACK, and the sender
   resends. Applied exactly once, never acknowledged unstored.
3. A message with no usable MSH, or one cut short by the next, is stored as received too.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from sonobridge.core.patients import Applier
from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error
from sonobridge.store.tables import hl7_messages as M

log = logging.getLogger("sonobridge.hl7")

# Built once: composing these per message cost a tenth of the message (SQLAlchemy's statement
# construction and cache-key work, measured with pyinstrument).
_SEEN = select(M.c.id, M.c.ack).where(
    M.c.direction == "in", M.c.sending_app == bindparam("app"),
    M.c.sending_facility == bindparam("facility"), M.c.control_id == bindparam("control"))
_INSERT = insert(M)
_UPDATE = update(M).where(M.c.id == bindparam("row_id"))

MESSAGES = Counter("sonobridge_hl7_messages_total", "HL7 v2 messages received, by ACK code",
                   ["type", "ack"])


class Inbound:
    def __init__(self, core: Any) -> None:
        self.core = core
        self.applier = Applier(core)
        self.receiving = core.settings.hl7_receiving_application

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
        try:
            hl7v2.check_header(header)
            text, codec = hl7v2.decode(raw)
            message = hl7v2.parse(text)
            receiving = field[5] if len(field) > 5 else ""
            if self.receiving and receiving != self.receiving:
                raise HL7Error(f"this is {self.receiving}, not {receiving!r} (MSH-5)", "207",
                               ("MSH", 1, 5), reject=True)
            # The raw message, its effect and its ACK commit together: applied exactly once,
            # and never acknowledged without being stored. Whether it was answered before is
            # asked in the same transaction (one transaction per message, not two).
            with self.core.store.write() as writer:
                row = writer.conn.execute(_SEEN, key).first()
                if row is not None and row.ack is not None:
                    return self._resend(row, kind, control, peer)
                done = self.applier.apply(writer, message, sender)
                ack = hl7v2.ack(header, "AA", "", None, self._control_id(), stamp)
                data = ack.encode(codec or "utf-8", "replace")
                final = {"status": "applied", "ack": data, "charset": codec,
                         "error": done.text[:1024], "updated": time.time_ns() // 1000}
                if row is None:
                    writer.conn.execute(_INSERT, {**log_row, **final})
                else:
                    writer.conn.execute(_UPDATE, {"row_id": row.id, **final})
                if self.core.audit is not None:  # the message's one event, with its change
                    self.core.audit.in_transaction(writer, self._record(
                        kind, control, sender, peer, "0", done.text, done.patient,
                        done.resource))
            MESSAGES.labels(kind, "AA").inc()
            log.info("HL7 %s %s from %s applied: %s", kind, control, peer, done.text)
            return data
        except IntegrityError:  # the same message on another connection, just now
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
        failed = {"status": status, "charset": codec, "error": text_error[:1024],
                  "updated": time.time_ns() // 1000}
        with self.core.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            row = conn.execute(_SEEN, key).first()
            if row is not None and row.ack is not None:  # answered before: that answer holds
                return self._resend(row, kind, control, peer)
            if row is None:
                conn.execute(_INSERT, {**log_row, **failed})
            else:
                conn.execute(_UPDATE, {"row_id": row.id, **failed})
        MESSAGES.labels(kind, code).inc()
        log.info("HL7 %s %s from %s: %s %s", kind, control, peer, code, text_error)
        self._audit(kind, control, sender, peer, "4" if error.reject else "8",
                    f"{code}: {text_error}")
        return data

    @staticmethod
    def _resend(row: Any, kind: str, control: str, peer: str) -> bytes:
        log.info("HL7 %s %s from %s: a resend, answered with the stored ACK", kind, control,
                 peer)
        MESSAGES.labels(kind, "resend").inc()
        return bytes(row.ack)

    def _audit(self, kind: str, control: str, sender: str, peer: str, outcome: str,
               detail: str) -> None:
        """A message that changed nothing (refused or failed): audited within a moment."""
        if self.core.audit is not None:
            self.core.audit.later(self._record(kind, control, sender, peer, outcome, detail))

    @staticmethod
    def _record(kind: str, control: str, sender: str, peer: str, outcome: str, detail: str,
                patient: str | None = None, resource: str | None = None) -> Any:
        from sonobridge.core.audit import Record

        return Record("hl7-in", "C" if outcome == "0" else "E", kind or "unknown",
                      outcome=outcome, who=f"hl7:{sender}", client_id=sender,
                      ip=peer.rsplit(":", 1)[0], patient=patient, resource=resource,
                      detail=f"MSH-10 {control}: {detail}"[:500])

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
        with self.core.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            conn.execute(insert(M).values(
                direction="in", peer=peer[:255], sending_app="", sending_facility="",
                control_id=f"no-msh-{uuid.uuid4().hex}", message_type="", charset="",
                raw=raw, status="rejected", error=error[:1024], attempts=1, received=now,
                updated=now))

    @staticmethod
    def _control_id() -> str:
        return uuid.uuid4().hex[:20]
