"""Inbound messages (HL7 v2), each applied exactly once and never acknowledged unstored.

1. A message whose (sending application, facility, MSH-10) was answered before gets the ACK
   it got then and is not applied again (a sender resending after a dropped connection).
2. The message is applied and stored with its ACK in one transaction; one that cannot be
   applied is stored with its error (and no ACK, so that a resend is tried again). Either way
   it is committed before its ACK is written: a crash in between means no ACK, and the sender
   resends. Applied exactly once, never acknowledged unstored.
3. A message with no usable header, or one cut short by the next, is stored as received too.

What a message means, and what its ACK says, is the edge's (``hie/mllp/``): it hands
``apply`` a function that makes the change in the given transaction and returns the ACK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from sonobridge.core.errors import CoreError
from sonobridge.core.events import Events
from sonobridge.store import hl7
from sonobridge.store.resources import ResourceStore, Writer


@dataclass(frozen=True, slots=True)
class Answer:
    """The ACK to send, and whether it is the one stored for an earlier copy (a resend)."""

    ack: bytes
    resend: bool = False


# Applies the message in the transaction: (ACK bytes, the log row's final columns).
Apply = Callable[[Writer], tuple[bytes, dict[str, Any]]]


class Messages:
    def __init__(self, store: ResourceStore, events: Events) -> None:
        self.store = store
        self.events = events

    def apply(self, key: dict[str, str], row: dict[str, Any], work: Apply) -> Answer:
        """Apply a message once: its effect, its log row and its ACK commit together. 409
        when the same message is being applied on another connection just now."""
        try:
            with self.store.write() as writer:
                found = hl7.seen(writer.conn, key)
                if found is not None and found[1] is not None:
                    return Answer(found[1], resend=True)
                ack, final = work(writer)
                hl7.log_message(writer.conn, found[0] if found else None, {**row, **final})
            return Answer(ack)
        except IntegrityError:
            raise CoreError(409, "conflict", "the same message is being applied on another "
                            "connection") from None

    def refused(self, key: dict[str, str], row: dict[str, Any]) -> bytes | None:
        """Keep a message that could not be applied (without an ACK, so that a resend is
        applied afresh). Returns the ACK of an earlier copy that was answered: that answer
        holds."""
        with self.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            found = hl7.seen(conn, key)
            if found is not None and found[1] is not None:
                return found[1]
            hl7.log_message(conn, found[0] if found else None, row)
        return None

    def keep(self, row: dict[str, Any]) -> None:
        """Keep what arrived although it is no message (no header, cut short)."""
        with self.store.engine.connect().execution_options(sqlite_write=True) as conn, \
                conn.begin():
            hl7.log_message(conn, None, row)
