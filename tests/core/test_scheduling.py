"""Scheduling (core/scheduling.py): booking a free Slot makes it busy in the Appointment's own
transaction, double booking and overlapping an expert's booked time are 409, cancelling or
deleting frees the Slot, times keep their offsets. On SQLite and PostgreSQL; over REST too."""

from __future__ import annotations

from typing import Any

import pytest

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import SearchSpec
from sonobridge.jsonio import loads

BASE = "http://sono.test/fhir"
SYSTEM = Caller(Policy.system("test-system"), BASE)


def slot(sid: str, start: str, end: str, status: str = "free") -> dict[str, Any]:
    return {"resourceType": "Slot", "id": sid, "schedule": {"reference": "Schedule/expert"},
            "status": status, "start": start, "end": end}


def appointment(slots: list[str], start: str, end: str, status: str = "booked",
                expert: str = "Practitioner/e1", gp: str = "Practitioner/gp", **extra: Any
                ) -> dict[str, Any]:
    body = {"resourceType": "Appointment", "status": status,
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "slot": [{"reference": f"Slot/{s}"} for s in slots],
            "start": start, "end": end,
            "participant": [{"actor": {"reference": gp}, "status": "accepted"},
                            {"actor": {"reference": expert}, "status": "accepted"}]}
    body.update(extra)
    return {k: v for k, v in body.items() if v}


@pytest.fixture
def world(core):
    put = core.resources.update
    put(SYSTEM, "Schedule", "expert", {
        "resourceType": "Schedule", "id": "expert", "active": True,
        "actor": [{"reference": "Practitioner/e1"}],
        "planningHorizon": {"start": "2026-12-04T08:00:00+08:00",
                            "end": "2026-12-04T18:00:00+08:00"}})
    put(SYSTEM, "Slot", "s1", slot("s1", "2026-12-04T14:00:00+08:00",
                                   "2026-12-04T14:30:00+08:00"))
    put(SYSTEM, "Slot", "s2", slot("s2", "2026-12-04T14:30:00+08:00",
                                   "2026-12-04T15:00:00+08:00"))
    # the same half hour as s1, written in UTC (another schedule of the same expert)
    put(SYSTEM, "Slot", "s1utc", slot("s1utc", "2026-12-04T06:15:00Z",
                                      "2026-12-04T06:45:00Z"))
    return core


def slot_status(core, sid: str) -> str:
    return loads(core.store.read("Slot", sid).content)["status"]


def test_booking_makes_the_slot_busy_in_the_same_transaction(world):
    written = world.resources.create(SYSTEM, "Appointment", appointment(
        ["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00"))
    assert slot_status(world, "s1") == "busy"
    body = loads(world.store.read("Appointment", written.stored.id).content)
    assert body["start"] == "2026-12-04T14:00:00+08:00"  # kept as sent, with its offset
    assert slot_status(world, "s2") == "free"


def test_a_refused_booking_leaves_the_slot_free(world):
    with pytest.raises(CoreError), world.store.write() as writer:
        world.resources.create(SYSTEM, "Appointment", appointment(
            ["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00"),
            writer=writer)
        raise CoreError(400, "invalid", "the rest of the transaction failed")
    assert slot_status(world, "s1") == "free"


def test_a_second_appointment_on_a_busy_slot_is_409(world):
    world.resources.create(SYSTEM, "Appointment", appointment(
        ["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00"))
    with pytest.raises(CoreError) as err:
        world.resources.create(SYSTEM, "Appointment", appointment(
            ["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00",
            expert="Practitioner/other", gp="Practitioner/gp2"))
    assert err.value.status == 409
    assert err.value.issues[0].expression == ["Appointment.slot[0]"]
    assert "Slot/s1 is busy" in str(err.value)


def test_overlapping_the_experts_booked_time_is_409_whatever_the_offset(world):
    world.resources.create(SYSTEM, "Appointment", appointment(
        ["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00"))
    with pytest.raises(CoreError) as err:  # 14:15-14:45 Shanghai, written in UTC
        world.resources.create(SYSTEM, "Appointment", appointment(
            ["s1utc"], "2026-12-04T06:15:00Z", "2026-12-04T06:45:00Z"))
    assert err.value.status == 409 and "Practitioner/e1 is already booked" in str(err.value)
    assert slot_status(world, "s1utc") == "free"
    # without a slot, the participant alone is enough to find the overlap
    with pytest.raises(CoreError):
        world.resources.create(SYSTEM, "Appointment", appointment(
            [], "2026-12-04T14:20:00+08:00", "2026-12-04T14:40:00+08:00"))
    # back to back is not an overlap
    world.resources.create(SYSTEM, "Appointment", appointment(
        ["s2"], "2026-12-04T14:30:00+08:00", "2026-12-04T15:00:00+08:00"))
    assert slot_status(world, "s2") == "busy"
    # the requesting doctor is booked too: not at the same time with another expert...
    with pytest.raises(CoreError) as gp:
        world.resources.create(SYSTEM, "Appointment", appointment(
            [], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00",
            expert="Practitioner/e2"))
    assert "Practitioner/gp is already booked" in str(gp.value)
    # ...but another doctor with another expert at the same time is fine
    world.resources.create(SYSTEM, "Appointment", appointment(
        [], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00",
        expert="Practitioner/e2", gp="Practitioner/gp2"))


def test_cancelling_frees_the_slot_and_it_can_be_booked_again(world):
    body = appointment(["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00")
    first = world.resources.create(SYSTEM, "Appointment", body)
    aid = first.stored.id
    world.resources.update(SYSTEM, "Appointment", aid, {**body, "id": aid,
                                                        "status": "cancelled"})
    assert slot_status(world, "s1") == "free"
    second = world.resources.create(SYSTEM, "Appointment", body)
    assert slot_status(world, "s1") == "busy"
    world.resources.delete(SYSTEM, "Appointment", second.stored.id)
    assert slot_status(world, "s1") == "free"


def test_moving_an_appointment_to_another_slot(world):
    body = appointment(["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00")
    aid = world.resources.create(SYSTEM, "Appointment", body).stored.id
    moved = appointment(["s2"], "2026-12-04T14:30:00+08:00", "2026-12-04T15:00:00+08:00")
    world.resources.update(SYSTEM, "Appointment", aid, {**moved, "id": aid})
    assert (slot_status(world, "s1"), slot_status(world, "s2")) == ("free", "busy")
    # updating it without a change keeps the slot (its own booking is no double booking)
    world.resources.update(SYSTEM, "Appointment", aid, {**moved, "id": aid,
                                                        "comment": "视频链接已发送"})
    assert slot_status(world, "s2") == "busy"


@pytest.mark.parametrize(("slots", "start", "end", "status", "path"), [
    (["nope"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00", 422,
     "Appointment.slot[0]"),
    (["s1"], "2026-12-04T13:50:00+08:00", "2026-12-04T14:30:00+08:00", 422,
     "Appointment.start"),
    (["s1"], "2026-12-04T14:30:00+08:00", "2026-12-04T14:00:00+08:00", 422,
     "Appointment.end"),
    ([], "2026-12-04T08:00:00+08:00", "2026-12-05T09:00:00+08:00", 422, "Appointment.end"),
])
def test_bad_bookings(world, slots, start, end, status, path):
    with pytest.raises(CoreError) as err:
        world.resources.create(SYSTEM, "Appointment", appointment(slots, start, end))
    assert err.value.status == status
    assert path in err.value.issues[0].expression
    assert slot_status(world, "s1") == "free"


def test_an_unavailable_slot_cannot_be_booked(world):
    world.resources.update(SYSTEM, "Slot", "s2", slot(
        "s2", "2026-12-04T14:30:00+08:00", "2026-12-04T15:00:00+08:00", "busy-unavailable"))
    with pytest.raises(CoreError) as err:
        world.resources.create(SYSTEM, "Appointment", appointment(
            ["s2"], "2026-12-04T14:30:00+08:00", "2026-12-04T15:00:00+08:00"))
    assert err.value.status == 409


def test_double_booking_over_rest_and_in_a_transaction_bundle(world, client):
    body = appointment(["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00")
    first = client.post("/fhir/Appointment", json=body)
    assert first.status_code == 201, first.text
    second = client.post("/fhir/Appointment", json=body)
    assert second.status_code == 409
    outcome = second.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Appointment.slot[0]"]
    free = client.get("/fhir/Slot", params={"schedule": "Schedule/expert", "status": "free"})
    assert [e["resource"]["id"] for e in free.json()["entry"]] in (["s2", "s1utc"],
                                                                   ["s1utc", "s2"])
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment(["s2"], "2026-12-04T14:30:00+08:00",
                                 "2026-12-04T15:00:00+08:00"),
         "request": {"method": "POST", "url": "Appointment"}},
        {"resource": appointment(["s1"], "2026-12-04T14:00:00+08:00",
                                 "2026-12-04T14:30:00+08:00", expert="Practitioner/x",
                                 gp="Practitioner/gp2"),
         "request": {"method": "POST", "url": "Appointment"}}]}
    refused = client.post("/fhir", json=bundle)
    assert refused.status_code == 409, refused.text
    assert slot_status(world, "s2") == "free"  # all or nothing


def test_two_concurrent_bookings_of_one_slot_one_wins(world):
    """Two transactions book the same free Slot at once: the second waits for the first
    (the Slot's row lock on PostgreSQL, the write lock on SQLite) and is refused with 409."""
    import threading

    body = appointment(["s1"], "2026-12-04T14:00:00+08:00", "2026-12-04T14:30:00+08:00")
    body["participant"] = [{"actor": {"reference": "Patient/nobody"}, "status": "accepted"}]
    booked = threading.Event()
    outcome: dict[str, object] = {}

    def second() -> None:
        booked.wait(10)
        try:
            world.resources.create(SYSTEM, "Appointment", body)
            outcome["second"] = "created"
        except CoreError as exc:
            outcome["second"] = exc.status

    thread = threading.Thread(target=second)
    thread.start()
    with world.store.write() as writer:
        world.resources.create(SYSTEM, "Appointment", body, writer=writer)
        booked.set()
        thread.join(0.5)  # the second booking is under way, and must wait for this one
        assert thread.is_alive()
    thread.join(20)
    assert outcome["second"] == 409
    assert slot_status(world, "s1") == "busy"
    found = world.resources.search(SYSTEM, SearchSpec(
        "Appointment", [("slot", "Slot/s1"), ("_summary", "count")]))
    assert found.bundle["total"] == 1
