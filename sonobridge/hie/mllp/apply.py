"""What an inbound HL7 v2 message asks of the core, inside the message's transaction.

ADT^A01/A04/A05/A08/A28/A31 create or update the Patient (``core.patients``); ADT^A40 merges
two Patients; ORM^O01 and OMI^O23 place, change or cancel an order (``core.orders``). Core
refusals become HL7 errors with the segment they concern.
"""

from __future__ import annotations

from dataclasses import dataclass

import hl7

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.services import Core
from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error
from sonobridge.store.resources import Writer

ADT_UPDATES = {"A01", "A04", "A05", "A08", "A28", "A31"}


@dataclass
class Applied:
    """What a message did: a short text for the ACK and the log, and the patient and the
    resource it concerns, for its audit event."""

    text: str
    patient: str | None = None
    resource: str | None = None


def sender_policy(sender: str) -> Policy:
    """An HL7 sender (MSH-3) writes as a trusted system (the HIS owns its patients and
    orders); ``SONOBRIDGE_HL7_SENDERS`` limits which may send at all."""
    return Policy.system(f"hl7:{sender}", sender)


class Applier:
    def __init__(self, core: Core) -> None:
        self.core = core

    def apply(self, writer: Writer, message: hl7.Message, caller: Caller) -> Applied:
        """Apply the message. Writes are audited by the message's own event (the caller is
        not ``audited``), except a merge's, each of which is far-reaching."""
        code, event = hl7v2.message_type(message)
        try:
            if code == "ADT" and event in ADT_UPDATES:
                pid = self.core.patients.upsert(writer, caller, hl7v2.patient(message))
                return Applied(f"Patient/{pid}", f"Patient/{pid}")
            if code == "ADT" and event == "A40":
                return self.merge(writer, message, caller)
            if (code, event) in (("ORM", "O01"), ("OMI", "O23")):
                parsed = hl7v2.order(message, self.core.settings.hl7_time_zone)
                try:
                    placed = self.core.orders.place(writer, caller, parsed)
                except CoreError as exc:
                    if exc.status == 404:
                        raise HL7Error(str(exc), "204", ("ORC", 1, 2)) from None
                    raise
                return Applied(f"ServiceRequest/{placed.order} {placed.status}",
                               f"Patient/{placed.patient}", f"ServiceRequest/{placed.order}")
        except CoreError as exc:
            raise HL7Error(f"cannot be stored: {exc}", "207") from None
        raise HL7Error(f"message type {code}^{event} is not supported", "200" if code not in (
            "ADT", "ORM", "OMI") else "201", ("MSH", 1, 9), reject=True)

    def merge(self, writer: Writer, message: hl7.Message, caller: Caller) -> Applied:
        """ADT^A40: the patient in MRG-1 is merged into the one in PID-3."""
        prior_ids = hl7v2.patient_identifiers(message, "MRG", 1)
        if not prior_ids:
            raise HL7Error("MRG-1 (prior patient identifier) is required", "101",
                           ("MRG", 1, 1))
        audited = Caller(caller.policy, caller.base, caller.address, audited=True)
        try:
            merged = self.core.patients.merge(writer, audited, hl7v2.patient(message),
                                              prior_ids)
        except CoreError as exc:
            if exc.status == 404:
                raise HL7Error("the patient in MRG-1 is not known", "204",
                               ("MRG", 1, 1)) from None
            raise
        new = f"Patient/{merged.survivor}"
        if merged.prior is None:
            return Applied(new, new)
        old = f"Patient/{merged.prior}"
        return Applied(f"{old} merged into {new}", new, old)
