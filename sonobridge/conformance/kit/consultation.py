"""The consultation suite: does the consultation workflow enforce itself, and does booking an
expert's slot refuse double bookings (issue 13; STANDARDS.md §7: WS/T 529/545 states carried in
Task.status + businessStatus)?

Against a FHIR base (``--target``), with a token allowed to walk every step (authorization
off, or a trusted system client): the kit writes a tagged Patient, consultation request, Task,
the expert's Schedule and Slot. The Task walks 草稿 → 待本院审核 → 待受理 → 已受理 → 分诊中 by
JSON Patch; a jump is refused with 409 and an OperationOutcome; 已排期 without an Appointment
is refused (422); the Appointment takes the Slot (busy) and a second one on it is 409; a
Task on another patient's request is 422; every step has a Provenance; cancelling the
Appointment frees the Slot. Everything is deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, R4, base, run_tag
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

PATCH = {"Accept": FHIR_JSON, "Content-Type": "application/json-patch+json"}
STATES = "http://sonobridge.org/fhir/CodeSystem/sono-consultation-business-status"
GUIDE = "http://sonobridge.org/fhir/ImplementationGuide/sonobridge"
STEPS = [("draft", "draft"), ("requested", "pending-local-review"),
         ("received", "pending-acceptance"), ("accepted", "accepted"), ("accepted", "triage")]


def _tag(ctx: Context) -> dict[str, str]:
    return run_tag(ctx, "consultation")


def _create(check: Check, body: dict[str, Any], what: str) -> str:
    body = {**body, "meta": {"tag": [_tag(check.ctx)]}}
    response = check.http.post(f"{base(check.ctx)}/{body['resourceType']}",
                               content=json.dumps(body, ensure_ascii=False), headers=HEADERS)
    expect_status(response, 201, what=what)
    rid = str(json_body(response).get("id"))
    check.ctx.state.setdefault("cs_created", []).append(f"{body['resourceType']}/{rid}")
    return rid


def _patch(check: Check, task: str, status: str, code: str) -> httpx.Response:
    ops = [{"op": "replace", "path": "/status", "value": status},
           {"op": "replace", "path": "/businessStatus/coding/0/code", "value": code}]
    response: httpx.Response = check.http.request(
        "PATCH", f"{base(check.ctx)}/Task/{task}", content=json.dumps(ops), headers=PATCH)
    return response


def _world(check: Check) -> dict[str, str]:
    """The Patients, requests and the expert's Slot the tests share (made once)."""
    state = check.ctx.state
    if "cs_world" not in state:
        ids = {"p1": _create(check, {"resourceType": "Patient", "name": [{"text": "会诊测试"}]},
                             "a Patient"),
               "p2": _create(check, {"resourceType": "Patient", "name": [{"text": "另一位"}]},
                             "another Patient")}
        for key, patient in (("sr1", "p1"), ("sr2", "p2")):
            ids[key] = _create(check, {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "code": {"text": "远程超声会诊"}, "priority": "routine",
                "subject": {"reference": f"Patient/{ids[patient]}"}}, "a consultation request")
        ids["schedule"] = _create(check, {"resourceType": "Schedule", "actor": [
            {"reference": f"Patient/{ids['p1']}"}]}, "the expert's Schedule")
        ids["slot"] = _create(check, {
            "resourceType": "Slot", "schedule": {"reference": f"Schedule/{ids['schedule']}"},
            "status": "free", "start": "2030-01-07T14:00:00+08:00",
            "end": "2030-01-07T14:30:00+08:00"}, "a free Slot")
        state["cs_world"] = ids
    world: dict[str, str] = state["cs_world"]
    return world


def _task(world: dict[str, str], request: str, patient: str, status: str, code: str
          ) -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "basedOn": [{"reference": f"ServiceRequest/{world[request]}"}],
            "businessStatus": {"coding": [{"system": STATES, "code": code}]},
            "for": {"reference": f"Patient/{world[patient]}"},
            "authoredOn": "2030-01-06T09:00:00+08:00"}


def _appointment(world: dict[str, str]) -> dict[str, Any]:
    return {"resourceType": "Appointment", "status": "booked",
            "basedOn": [{"reference": f"ServiceRequest/{world['sr1']}"}],
            "slot": [{"reference": f"Slot/{world['slot']}"}],
            "start": "2030-01-07T14:00:00+08:00", "end": "2030-01-07T14:30:00+08:00",
            "participant": [{"actor": {"reference": f"Patient/{world['p1']}"},
                             "status": "accepted"}]}


def _outcome(check: Check, response: httpx.Response, *words: str) -> None:
    body = json_body(response, "the refusal")
    check.expect(body.get("resourceType") == "OperationOutcome",
                 f"a refusal is an OperationOutcome, not {body.get('resourceType')}")
    text = " ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))
    for word in words:
        check.expect(word in text, f"the OperationOutcome names {word!r}: {text[:200]}")


def walk(check: Check) -> None:
    world = _world(check)
    status, code = STEPS[0]
    task = _create(check, _task(world, "sr1", "p1", status, code), "a consultation Task (草稿)")
    check.ctx.state["cs_task"] = task
    for status, code in STEPS[1:]:
        expect_status(_patch(check, task, status, code), 200, what=f"Task -> {code}")


def illegal(check: Check) -> None:
    task = check.ctx.needs("cs_task", "the walk did not create its Task")
    response = _patch(check, task, "completed", "completed")
    expect_status(response, 409, what="分诊中 -> 已完成 (not in the table)")
    _outcome(check, response, "triage", "completed")
    response = _patch(check, task, "requested", "triage")
    expect_status(response, 409, 422, what="a Task.status that does not go with the state")


def needs_appointment(check: Check) -> None:
    task = check.ctx.needs("cs_task", "the walk did not create its Task")
    response = _patch(check, task, "ready", "scheduled")
    expect_status(response, 422, what="已排期 without an Appointment")
    _outcome(check, response, "Appointment")


def booking(check: Check) -> None:
    world = _world(check)
    appointment = _create(check, _appointment(world), "an Appointment on the free Slot")
    check.ctx.state["cs_appointment"] = appointment
    slot = json_body(check.http.get(f"{base(check.ctx)}/Slot/{world['slot']}",
                                     headers=HEADERS))
    check.expect(slot.get("status") == "busy", f"the booked Slot is busy, not "
                 f"{slot.get('status')!r}")
    again = check.http.post(f"{base(check.ctx)}/Appointment", headers=HEADERS,
                            content=json.dumps({**_appointment(world),
                                                "meta": {"tag": [_tag(check.ctx)]}}))
    if again.status_code == 201:
        check.ctx.state["cs_created"].append(f"Appointment/{json_body(again).get('id')}")
    expect_status(again, 409, what="a second Appointment on the busy Slot")
    task = check.ctx.needs("cs_task", "the walk did not create its Task")
    expect_status(_patch(check, task, "ready", "scheduled"), 200,
                  what="已排期 once the Appointment exists")


def other_patient(check: Check) -> None:
    world = _world(check)
    response = check.http.post(f"{base(check.ctx)}/Task", headers=HEADERS, content=json.dumps(
        {**_task(world, "sr2", "p1", "draft", "draft"), "meta": {"tag": [_tag(check.ctx)]}}))
    if response.status_code == 201:
        check.ctx.state["cs_created"].append(f"Task/{json_body(response).get('id')}")
    expect_status(response, 422, what="a Task for p1 on p2's request")
    _outcome(check, response, "Task.for")


def provenance(check: Check) -> None:
    task = check.ctx.needs("cs_task", "the walk did not create its Task")
    response = check.http.get(f"{base(check.ctx)}/Provenance", headers=HEADERS,
                              params={"target": f"Task/{task}", "_count": "100"})
    expect_status(response, 200, what="Provenance?target=Task/…")
    found = [e.get("resource", {}) for e in json_body(response).get("entry", [])]
    check.ctx.state["cs_provenance"] = [f"Provenance/{p.get('id')}" for p in found]
    steps = len(STEPS) + 1  # the walk, then 已排期
    check.expect(len(found) == steps, f"one Provenance per accepted step ({steps}), found "
                 f"{len(found)}")
    versions = sorted(int(str(p["target"][0]["reference"]).rsplit("/", 1)[1]) for p in found
                      if p.get("target") and "/_history/" in str(p["target"][0].get(
                          "reference", "")))
    check.expect(versions == list(range(1, steps + 1)),
                 f"the Provenances target versions 1..{steps} of the Task: {versions}")


def cancel(check: Check) -> None:
    world = _world(check)
    appointment = check.ctx.needs("cs_appointment", "the booking test did not book")
    response = check.http.get(f"{base(check.ctx)}/Appointment/{appointment}", headers=HEADERS)
    body = json_body(response)
    body.pop("meta", None)
    expect_status(check.http.put(
        f"{base(check.ctx)}/Appointment/{appointment}", headers=HEADERS,
        content=json.dumps({**body, "status": "cancelled"}, ensure_ascii=False)), 200,
        what="cancelling the Appointment")
    slot = json_body(check.http.get(f"{base(check.ctx)}/Slot/{world['slot']}",
                                     headers=HEADERS))
    check.expect(slot.get("status") == "free", f"the cancelled Appointment's Slot is free, "
                 f"not {slot.get('status')!r}")


def cleanup(ctx: Context) -> None:
    created = list(dict.fromkeys(ctx.state.get("cs_created", [])))
    created += ctx.state.get("cs_provenance", [])
    order = ["Provenance", "Task", "Appointment", "Slot", "Schedule", "ServiceRequest",
             "Patient"]
    for ref in sorted(created, key=lambda r: order.index(r.split("/")[0])
                      if r.split("/")[0] in order else 0):
        with contextlib.suppress(httpx.HTTPError, Skipped, Failed):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})
    ctx.state["cs_created"] = []


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("consultation-01", "A consultation Task walks its states", "Task.status with the "
       "consultation state in businessStatus, moved by JSON Patch (STANDARDS §7, WS/T 529).",
       f"{R4}/task.html#statemachine", walk),
    _t("consultation-02", "An illegal step is refused with 409", "A transition outside the "
       "table is refused with 409 and an OperationOutcome naming both states.",
       f"{R4}/operationoutcome.html", illegal),
    _t("consultation-03", "已排期 needs an Appointment", "A Task is scheduled only once an "
       "Appointment based on its request exists (422 otherwise).", GUIDE, needs_appointment),
    _t("consultation-04", "Booking takes the Slot; a double booking is 409", "An Appointment "
       "on a free Slot makes it busy in the same transaction; a second one is refused.",
       f"{R4}/appointment.html", booking),
    _t("consultation-05", "A Task on another patient's request is 422", "Task.for is the "
       "subject of the ServiceRequest it works on.", GUIDE, other_patient),
    _t("consultation-06", "Every step has a Provenance", "Each accepted step is recorded as a "
       "Provenance targeting the Task version.", f"{R4}/provenance.html", provenance),
    _t("consultation-07", "Cancelling frees the Slot", "A cancelled Appointment gives its "
       "Slot back (free).", f"{R4}/slot.html", cancel),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("consultation", "Consultation workflow and scheduling", TESTS,
                  teardown=cleanup)]


SUITE = Suite("consultation", "Remote consultation (workflow, Provenance, scheduling)", groups)
