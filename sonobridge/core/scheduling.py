"""Experts' availability and booking: Schedule/Slot, and Appointments that take a Slot.

An expert's availability is a ``Schedule`` (actor: the Practitioner or PractitionerRole) with
``Slot``s (start and end with their UTC offset, status ``free`` or ``busy``). Booking a video
consultation is creating an ``Appointment`` whose ``slot`` names a free Slot: in the same
transaction the Slot becomes ``busy`` (so a client never sees one without the other). A second
Appointment on a busy Slot, or one overlapping time the same practitioner is already booked
for, is refused with 409; cancelling the Appointment (status cancelled, noshow or
entered-in-error, or deleting it) frees its Slots.

Why listeners and not an operation: booking stays an ordinary FHIR create, so any FHIR client
(and a transaction bundle) books; the rule cannot be bypassed by choosing another path.

Concurrency: the Slot is updated with the version that was seen free (``If-Match``); on
PostgreSQL the row lock makes a concurrent booking of the same Slot wait and then fail with 409.
Times are compared as instants; they are kept as sent (docs show Asia/Shanghai, +08:00).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sonobridge.core.consultation import parse_instant, reference_target
from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.jsonio import loads as json_loads
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

INACTIVE = frozenset({"cancelled", "noshow", "entered-in-error"})
ACTIVE_STATUSES = "proposed,pending,booked,arrived,fulfilled,checked-in,waitlist"
LONGEST = timedelta(hours=24)  # an Appointment longer than this is refused (bounded search)
PEOPLE = ("Practitioner", "PractitionerRole")


def _active(appointment: dict[str, Any] | None) -> bool:
    return bool(appointment) and (appointment or {}).get("status") not in INACTIVE


def _slots(appointment: dict[str, Any] | None, base: str) -> list[str]:
    """Ids of the Slots an (active) Appointment holds."""
    if not _active(appointment):
        return []
    out = []
    for ref in (appointment or {}).get("slot") or ():
        target = reference_target(ref, base)
        if target is not None and target[0] == "Slot":
            out.append(target[1])
    return out


def _read(writer: Writer, res_type: str, res_id: str) -> tuple[dict[str, Any], int] | None:
    stored = writer.read(res_type, res_id)
    if stored is None or stored.deleted or stored.content is None:
        return None
    content: dict[str, Any] = json_loads(stored.content)
    return content, stored.version_id


def _period(resource: dict[str, Any], kind: str) -> tuple[datetime, datetime] | None:
    start, end = resource.get("start"), resource.get("end")
    if start is None and end is None:
        return None
    begin, finish = parse_instant(start), parse_instant(end)
    if begin is None or finish is None:
        raise CoreError(422, "required", f"an {kind} that books time has start and end",
                        expression=[f"{kind}.start" if begin is None else f"{kind}.end"])
    if finish <= begin:
        raise CoreError(422, "business-rule", f"{kind}.end must be after {kind}.start",
                        expression=[f"{kind}.end"])
    return begin, finish


class Scheduling:
    def __init__(self, core: Core) -> None:
        self.core = core

    # ------------------------------------------------------------ before the write

    def check(self, event: ResourceWriting) -> None:
        if event.res_type != "Appointment" or not _active(event.resource):
            return
        appointment = event.resource
        base = event.caller.base
        period = _period(appointment, "Appointment")
        if period is not None and period[1] - period[0] > LONGEST:
            raise CoreError(422, "business-rule", "an Appointment lasts at most 24 hours",
                            expression=["Appointment.end"])
        held = set(_slots(event.previous, base))
        people: set[tuple[str, str]] = set()
        for i, ref in enumerate(appointment.get("slot") or ()):
            target = reference_target(ref, base)
            path = f"Appointment.slot[{i}]"
            found = _read(event.writer, "Slot", target[1]) \
                if target is not None and target[0] == "Slot" else None
            if target is None or found is None:
                raise CoreError(422, "not-found", f"{path} is not a Slot of this server",
                                expression=[path])
            slot, _ = found
            if target[1] not in held and slot.get("status") != "free":
                raise CoreError(409, "conflict", f"Slot/{target[1]} is {slot.get('status')}, "
                                "not free: choose another slot", expression=[path])
            slot_period = _period(slot, "Slot")
            if period is not None and slot_period is not None and not (
                    slot_period[0] <= period[0] and period[1] <= slot_period[1]):
                raise CoreError(422, "business-rule", f"the Appointment's time is outside "
                                f"Slot/{target[1]} ({slot.get('start')} - {slot.get('end')})",
                                expression=["Appointment.start", path])
            schedule = reference_target(slot.get("schedule"), base)
            found_schedule = _read(event.writer, *schedule) if schedule else None
            for actor in (found_schedule[0] if found_schedule else {}).get("actor") or ():
                person = reference_target(actor, base)
                if person is not None and person[0] in PEOPLE:
                    people.add(person)
        for participant in appointment.get("participant") or ():
            person = reference_target((participant or {}).get("actor"), base)
            if person is not None and person[0] in PEOPLE \
                    and participant.get("status") != "declined":
                people.add(person)
        if period is not None:
            for person in sorted(people):
                self._no_overlap(event, period, person)

    def _no_overlap(self, event: ResourceWriting, period: tuple[datetime, datetime],
                    person: tuple[str, str]) -> None:
        """409 when ``person`` is already booked for time overlapping ``period``."""
        begin, finish = period
        query = [("actor", f"{person[0]}/{person[1]}"), ("status", ACTIVE_STATUSES),
                 ("date", f"lt{finish.isoformat()}"),
                 ("date", f"gt{(begin - LONGEST).isoformat()}")]
        ids = self.core.resources.find(event.writer, "Appointment", query, event.caller.base,
                                       limit=200)
        for other_id in ids:
            if other_id == event.res_id:
                continue
            found = _read(event.writer, "Appointment", other_id)
            if found is None or not _active(found[0]):
                continue
            other = _period(found[0], "Appointment")
            if other is not None and other[0] < finish and begin < other[1]:
                raise CoreError(409, "conflict",
                                f"{person[0]}/{person[1]} is already booked "
                                f"{found[0].get('start')} - {found[0].get('end')} "
                                f"(Appointment/{other_id})",
                                expression=["Appointment.start", "Appointment.participant"])

    # ------------------------------------------------------------ after the write

    def book(self, event: ResourceChanged) -> None:
        """Mark the Slots the Appointment took busy and those it let go free."""
        if event.stored.type != "Appointment" or not event.changed:
            return
        base = event.caller.base
        before: dict[str, Any] | None = None
        if event.stored.version_id > 1:
            previous = self.core.store.vread("Appointment", event.stored.id,
                                             event.stored.version_id - 1)
            if previous is not None and previous.content is not None:
                before = json_loads(previous.content)
        old, new = set(_slots(before, base)), set(_slots(event.resource, base))
        for slot_id in sorted(new - old):
            self._set(event, slot_id, "busy")
        for slot_id in sorted(old - new):
            self._set(event, slot_id, "free")

    def _set(self, event: ResourceChanged, slot_id: str, status: str) -> None:
        found = _read(event.writer, "Slot", slot_id)
        if found is None:
            return
        slot, version = found
        if slot.get("status") == status:
            if status == "busy":  # taken since the check (a concurrent booking)
                raise CoreError(409, "conflict", f"Slot/{slot_id} was booked meanwhile",
                                expression=["Appointment.slot"])
            return
        if status == "free" and slot.get("status") != "busy":
            return  # busy-unavailable or entered-in-error stays as it is
        slot.pop("meta", None)
        slot["status"] = status
        try:
            self.core.resources.update(event.caller.derived(), "Slot", slot_id, slot,
                                       if_match=version, writer=event.writer)
        except CoreError as exc:
            if exc.status == 412:
                raise CoreError(409, "conflict", f"Slot/{slot_id} was booked meanwhile",
                                expression=["Appointment.slot"]) from None
            raise


def attach(core: Core) -> None:
    scheduling = Scheduling(core)
    core.events.listen(ResourceWriting, scheduling.check)
    core.events.listen(ResourceChanged, scheduling.book)
