"""The consultation workflow (core/consultation.py): every row of the transition table by its
roles, every other pair refused with 409, wrong roles 403, preconditions 422, a Provenance per
accepted step, PATCH as well as PUT, the overdue flag. On SQLite and PostgreSQL (``core``).

Callers here carry a role as a user's token does (``user/*.cruds`` bounded by the role); the
same rules through real SMART tokens are in test_consultation_tokens.py.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sonobridge.conformance.ig import content
from sonobridge.core.consultation import (
    CLINICIAN,
    DISPATCHER,
    EXPERT,
    FLAG_SYSTEM,
    MEDICAL_AFFAIRS,
    OVERDUE,
    OVERDUE_EXTENSION,
    STATE_SYSTEM,
    STATES,
    TRANSITION_EXTENSION,
    TRANSITIONS,
    workflow_of,
)
from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import Patch, SearchSpec
from sonobridge.core.roles import ROLES, role_allows
from sonobridge.core.scopes import resource_scopes
from sonobridge.jsonio import dumps, loads

BASE = "http://sono.test/fhir"
WORKFLOW_ROLES = (CLINICIAN, MEDICAL_AFFAIRS, DISPATCHER, EXPERT)
SYSTEM = Caller(Policy.system("test-system"), BASE)


def as_role(role: str | None, user: str = "Practitioner/u1") -> Caller:
    return Caller(Policy(subject=f"user-{role}", client_id="app",
                         scopes=tuple(resource_scopes("user/*.cruds")), role=role,
                         fhir_user=user), BASE)


def task(state: str, *, patient: str = "p1", request: str = "sr1", **extra: Any
         ) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Task", "id": "t1", "status": STATES[state][0], "intent": "order",
        "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state,
                                       "display": STATES[state][1]}]},
        "basedOn": [{"reference": f"ServiceRequest/{request}"}],
        "for": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-12-01T09:00:00+08:00",
        "requester": {"reference": "Practitioner/gp"},
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


REPORT_OUT = [{"type": {"text": "会诊报告"},
               "valueReference": {"reference": "DiagnosticReport/r1"}}]


@pytest.fixture
def world(core):
    for pid in ("p1", "p2"):
        core.resources.update(SYSTEM, "Patient", pid, {"resourceType": "Patient", "id": pid})
    for rid, pid in (("sr1", "p1"), ("sr2", "p2")):
        core.resources.update(SYSTEM, "ServiceRequest", rid, {
            "resourceType": "ServiceRequest", "id": rid, "status": "active",
            "intent": "order", "subject": {"reference": f"Patient/{pid}"}})
    return core


def put(core, caller: Caller, body: dict[str, Any]):
    return core.resources.update(caller, "Task", body["id"], body)


def reset(core, body: dict[str, Any]) -> None:
    """Put the Task in a state whatever it is in now: a trusted system brings it anew."""
    core.resources.delete(SYSTEM, "Task", body["id"])
    core.resources.update(SYSTEM, "Task", body["id"], body)


def provenances(core, target: str) -> list[dict[str, Any]]:
    found = core.resources.search(SYSTEM, SearchSpec(
        "Provenance", [("target", target), ("_count", "100")]))
    out = [e["resource"] for e in loads(dumps(found.bundle)).get("entry", [])]
    if "/_history/" in target:  # the search matches any version: keep this one's
        out = [p for p in out if p["target"][0]["reference"] == target]
    return out


def state_now(core, tid: str = "t1") -> str:
    body = loads(core.store.read("Task", tid).content)
    return body["businessStatus"]["coding"][0]["code"]


def prepare(core, target: str) -> dict[str, Any]:
    """What the target state needs to exist first; returns extra Task elements."""
    if target == "scheduled":
        core.resources.update(SYSTEM, "Appointment", "a1", {
            "resourceType": "Appointment", "id": "a1", "status": "booked",
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})
    if target in ("completed", "feedback-given"):
        core.resources.update(SYSTEM, "DiagnosticReport", "r1", {
            "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
            "code": {"text": "US"}, "subject": {"reference": "Patient/p1"}})
        return {"output": REPORT_OUT}
    return {}


def test_states_are_the_guides():
    """The core's copy of the states is the guide's code system (codes, Chinese, status)."""
    guide = {code: zh for code, zh, _ in content.BUSINESS_STATUS}
    assert guide == {code: zh for code, (_, zh) in STATES.items()}
    assert content.url("CodeSystem", "sono-consultation-business-status") == STATE_SYSTEM
    status_of = getattr(content, "TASK_STATUS_OF", None)
    if status_of is not None:
        assert status_of == {code: status for code, (status, _) in STATES.items()}


@pytest.mark.parametrize("step", TRANSITIONS, ids=lambda t: f"{t.source or 'new'}->{t.target}")
def test_each_transition_by_its_roles_and_not_by_others(world, step):
    core = world
    extra = {**prepare(core, step.source), **prepare(core, step.target)}
    for role in WORKFLOW_ROLES:
        if role in step.roles:
            continue
        if step.source:
            reset(core, task(step.source, **extra))
        with pytest.raises(CoreError) as refused:
            put(core, as_role(role), task(step.target, **extra))
        assert refused.value.status == 403, (role, refused.value)
        if role_allows(role, "Task", "u" if step.source else "c"):  # else: the scopes refuse
            assert " or ".join(sorted(step.roles)) in str(refused.value)
            assert refused.value.issues[0].expression == ["Task.businessStatus"]
        if step.source:
            assert state_now(core) == step.source  # nothing changed
        else:
            assert core.store.read("Task", "t1") is None
    for role in sorted(step.roles):
        if step.source:
            reset(core, task(step.source, **extra))
        written = put(core, as_role(role, f"Practitioner/{role}"), task(step.target, **extra))
        assert state_now(core) == step.target
        entries = provenances(core, written.stored.version_url)
        assert len(entries) == 1
        prov = entries[0]
        assert prov["target"] == [{"reference": written.stored.version_url}]
        assert prov["agent"][0]["who"]["reference"] == f"Practitioner/{role}"
        assert prov["agent"][0]["role"] == [{"text": role}]
        assert prov["recorded"] == written.stored.last_updated_instant
        parts = {p["url"]: p["valueCoding"]["code"]
                 for p in prov["extension"][0]["extension"]}
        assert prov["extension"][0]["url"] == TRANSITION_EXTENSION
        assert parts == ({"from": step.source, "to": step.target} if step.source
                         else {"to": step.target})
        if not step.source:
            core.resources.delete(SYSTEM, "Task", "t1")


def test_every_pair_not_in_the_table_is_409_naming_both_states(world):
    core = world
    allowed = {(t.source, t.target) for t in TRANSITIONS}
    refused = 0
    prepare(core, "scheduled")
    prepare(core, "completed")
    for source, target in itertools.permutations(STATES, 2):
        if (source, target) in allowed:
            continue
        reset(core, task(source, output=REPORT_OUT))
        with pytest.raises(CoreError) as err:  # unrestricted: the table alone refuses
            put(core, Caller(Policy.open(), BASE), task(target, output=REPORT_OUT))
        assert err.value.status == 409, (source, target)
        message = str(err.value)
        assert STATES[source][1] in message and STATES[target][1] in message, message
        assert err.value.issues[0].expression == ["Task.businessStatus", "Task.status"]
        assert state_now(core) == source
        refused += 1
    assert refused == 13 * 12 - sum(1 for t in TRANSITIONS if t.source)


def test_a_new_task_starts_as_draft_or_submitted_only(world):
    for state in STATES:
        if state in ("draft", "pending-local-review"):
            continue
        with pytest.raises(CoreError) as err:
            put(world, as_role(CLINICIAN), task(state, output=REPORT_OUT))
        assert err.value.status in (403, 409)
        with pytest.raises(CoreError) as err:  # anonymous (authorization off): still 409
            put(world, Caller(Policy.open(), BASE), task(state, output=REPORT_OUT))
        assert err.value.status == 409
        assert world.store.read("Task", "t1") is None


def test_a_trusted_system_may_bring_a_consultation_under_way(world):
    put(world, SYSTEM, task("accepted"))
    assert state_now(world) == "accepted"
    with pytest.raises(CoreError) as err:  # ...but from there on it walks the table
        put(world, SYSTEM, task("completed", output=prepare(world, "completed")["output"]))
    assert err.value.status == 409


def test_status_must_go_with_the_business_state(world):
    with pytest.raises(CoreError) as err:
        put(world, as_role(CLINICIAN), task("draft", status="requested"))
    assert err.value.status == 422
    assert err.value.issues[0].expression == ["Task.status"]
    assert "'draft'" in str(err.value)


def test_unknown_state_code_is_422(world):
    body = task("draft")
    body["businessStatus"]["coding"][0]["code"] = "teleported"
    with pytest.raises(CoreError) as err:
        put(world, as_role(CLINICIAN), body)
    assert err.value.status == 422 and "teleported" in str(err.value)


def test_a_consultation_task_keeps_its_business_state(world):
    put(world, as_role(CLINICIAN), task("draft"))
    body = task("draft")
    del body["businessStatus"]
    with pytest.raises(CoreError) as err:
        put(world, as_role(CLINICIAN), body)
    assert err.value.status == 409 and "草稿" in str(err.value)


def test_task_on_another_patients_request_is_422(world):
    with pytest.raises(CoreError) as err:
        put(world, as_role(CLINICIAN), task("draft", request="sr2"))  # sr2 is p2's
    assert err.value.status == 422
    assert err.value.issues[0].expression == ["Task.for", "Task.basedOn[0]"]
    with pytest.raises(CoreError) as unknown:  # a missing request answers the same way
        put(world, as_role(CLINICIAN), task("draft", request="nope"))
    assert unknown.value.status == 422
    assert str(unknown.value).replace("nope", "sr2") == str(err.value)
    with pytest.raises(CoreError) as none:
        put(world, as_role(CLINICIAN), task("draft", basedOn=None))
    assert none.value.status == 422 and none.value.issues[0].expression == ["Task.basedOn"]
    # focus names the request as well (the issue's SonoConsultationTask)
    put(world, as_role(CLINICIAN), task("draft", basedOn=None,
                                        focus={"reference": f"{BASE}/ServiceRequest/sr1"}))
    assert state_now(world) == "draft"
    with pytest.raises(CoreError) as moved:  # and an update may not move it to p2
        put(world, as_role(CLINICIAN), task("draft", patient="p2"))
    assert moved.value.status == 422


def test_scheduled_needs_an_active_appointment_for_the_request(world):
    put(world, SYSTEM, task("triage"))
    with pytest.raises(CoreError) as err:
        put(world, as_role(DISPATCHER), task("scheduled"))
    assert err.value.status == 422 and "Appointment" in str(err.value)
    world.resources.update(SYSTEM, "Appointment", "a1", {
        "resourceType": "Appointment", "id": "a1", "status": "cancelled",
        "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})
    with pytest.raises(CoreError):  # a cancelled one does not count
        put(world, as_role(DISPATCHER), task("scheduled"))
    prepare(world, "scheduled")
    put(world, as_role(DISPATCHER), task("scheduled"))
    assert state_now(world) == "scheduled"


def test_completed_needs_a_final_report_of_the_patient_in_output(world):
    put(world, SYSTEM, task("in-consultation"))
    with pytest.raises(CoreError) as err:
        put(world, as_role(EXPERT), task("completed"))
    assert err.value.status == 422 and err.value.issues[0].expression == ["Task.output"]
    world.resources.update(SYSTEM, "DiagnosticReport", "r1", {
        "resourceType": "DiagnosticReport", "id": "r1", "status": "preliminary",
        "code": {"text": "US"}, "subject": {"reference": "Patient/p1"}})
    with pytest.raises(CoreError):
        put(world, as_role(EXPERT), task("completed", output=REPORT_OUT))
    world.resources.update(SYSTEM, "DiagnosticReport", "r2", {
        "resourceType": "DiagnosticReport", "id": "r2", "status": "final",
        "code": {"text": "US"}, "subject": {"reference": "Patient/p2"}})
    with pytest.raises(CoreError):  # another patient's final report
        put(world, as_role(EXPERT), task("completed", output=[
            {"type": {"text": "report"},
             "valueReference": {"reference": "DiagnosticReport/r2"}}]))
    world.resources.update(SYSTEM, "DiagnosticReport", "r1", {
        "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
        "code": {"text": "US"}, "subject": {"reference": "Patient/p1"}})
    put(world, as_role(EXPERT), task("completed", output=REPORT_OUT))
    assert state_now(world) == "completed"


def test_patch_is_a_transition_too(world):
    put(world, as_role(CLINICIAN), task("draft"))
    submit = [{"op": "replace", "path": "/status", "value": "requested"},
              {"op": "replace", "path": "/businessStatus/coding/0/code",
               "value": "pending-local-review"}]
    world.resources.patch(as_role(CLINICIAN), "Task", "t1", Patch(submit, "json-patch"))
    assert state_now(world) == "pending-local-review"
    jump = [{"op": "replace", "path": "/status", "value": "completed"},
            {"op": "replace", "path": "/businessStatus/coding/0/code", "value": "completed"}]
    with pytest.raises(CoreError) as err:
        world.resources.patch(as_role(MEDICAL_AFFAIRS), "Task", "t1", Patch(jump, "json-patch"))
    assert err.value.status == 409
    approve = [{"op": "replace", "path": "/status", "value": "received"},
               {"op": "replace", "path": "/businessStatus/coding/0/code",
                "value": "pending-acceptance"}]
    with pytest.raises(CoreError) as wrong:
        world.resources.patch(as_role(CLINICIAN), "Task", "t1", Patch(approve, "json-patch"))
    assert wrong.value.status == 403
    world.resources.patch(as_role(MEDICAL_AFFAIRS), "Task", "t1", Patch(approve, "json-patch"))
    assert state_now(world) == "pending-acceptance"


def test_a_note_in_the_same_state_is_no_transition(world):
    put(world, as_role(CLINICIAN), task("draft"))
    put(world, as_role(CLINICIAN), task("draft", note=[{"text": "补充病史"}]))
    assert len(provenances(world, "Task/t1")) == 1  # the creation only


def test_other_tasks_are_not_concerned(world):
    other = {"resourceType": "Task", "id": "t9", "status": "completed", "intent": "order",
             "businessStatus": {"text": "done"}}
    world.resources.update(as_role("trainer"), "Task", "t9", other)
    world.resources.update(as_role("trainer"), "Task", "t9", {**other, "status": "draft"})


def test_history_walks_the_states_with_a_provenance_per_version(world):
    steps = [(CLINICIAN, "draft"), (CLINICIAN, "pending-local-review"),
             (MEDICAL_AFFAIRS, "pending-acceptance"), (DISPATCHER, "accepted"),
             (DISPATCHER, "triage"), (DISPATCHER, "scheduled"), (EXPERT, "in-consultation"),
             (EXPERT, "report-pending-review"), (EXPERT, "completed"),
             (CLINICIAN, "feedback-given")]
    for role, state in steps:
        extra = prepare(world, state)
        if state == "feedback-given":
            extra = {"output": REPORT_OUT}
        put(world, as_role(role, f"Practitioner/{role}"), task(state, **extra))
    versions, _ = world.store.history(res_type="Task", res_id="t1")
    provs = provenances(world, "Task/t1")
    assert len(provs) == len(steps)
    walked = []
    for prov in provs:
        version = int(prov["target"][0]["reference"].rsplit("/", 1)[1])
        body = loads(world.store.vread("Task", "t1", version).content)
        to = {p["url"]: p["valueCoding"]["code"] for p in prov["extension"][0]["extension"]}
        assert body["businessStatus"]["coding"][0]["code"] == to["to"]
        walked.append((version, to["to"]))
    assert [s for _, s in sorted(walked)] == [s for _, s in steps]
    assert len(versions) == len(steps)


def test_wrong_role_outside_the_workflow_is_403(world):
    put(world, SYSTEM, task("pending-acceptance"))
    for role in ROLES:
        if role in (DISPATCHER, "remote-expert", "referring-clinician", "medical-affairs"):
            continue
        with pytest.raises(CoreError) as err:
            put(world, as_role(role), task("accepted"))
        assert err.value.status == 403, role


def _authored(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).astimezone(
        UTC).isoformat(timespec="seconds")


def test_overdue_requests_are_flagged_once_and_keep_their_state(world):
    cases = {"late-urgent": ("urgent", 3, "pending-acceptance", True),
             "ok-routine": ("routine", 3, "pending-acceptance", False),
             "late-routine": (None, 30, "triage", True),
             "late-stat": ("stat", 0.6, "accepted", True),
             "done": ("stat", 5, "completed", False),
             "draft": ("stat", 5, "draft", False)}
    for tid, (priority, hours, state, _) in cases.items():
        body = task(state, output=REPORT_OUT if state == "completed" else None,
                    authoredOn=_authored(hours))
        body["id"] = tid
        if priority:
            body["priority"] = priority
        if state == "completed":
            prepare(world, "completed")
        world.resources.update(SYSTEM, "Task", tid, body)
    workflow = workflow_of(world)
    assert workflow.flag_overdue() == 3
    for tid, (_, _, state, late) in cases.items():
        body = loads(world.store.read("Task", tid).content)
        assert body["businessStatus"]["coding"][0]["code"] == state
        flags = [e for e in body.get("extension", []) if e["url"] == OVERDUE_EXTENSION]
        assert bool(flags) == late, tid
        assert any(t.get("system") == FLAG_SYSTEM for t in body["meta"].get("tag", [])) == late
    assert OVERDUE._value.get() == 3
    assert workflow.flag_overdue() == 0  # once
    late = loads(world.store.read("Task", "late-urgent").content)
    deadline = datetime.fromisoformat(
        next(e for e in late["extension"] if e["url"] == OVERDUE_EXTENSION)["valueDateTime"])
    authored = datetime.fromisoformat(late["authoredOn"])
    assert deadline - authored == timedelta(hours=2)


def test_a_request_and_its_task_in_one_transaction_bundle(world, client):
    """References to a request written in the same bundle (urn:uuid) are resolved first."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f0c5d1e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/p1"}},
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": {**task("draft"), "id": None,
                      "basedOn": [{"reference": "urn:uuid:6f0c5d1e-0000-4000-8000-000000000001"}]},
         "request": {"method": "POST", "url": "Task"}}]}
    bundle["entry"][1]["resource"] = {k: v for k, v in bundle["entry"][1]["resource"].items()
                                      if v is not None}
    ok = client.post("/fhir", json=bundle)
    assert ok.status_code == 200, ok.text
    assert [e["response"]["status"][:3] for e in ok.json()["entry"]] == ["201", "201"]
    # the same bundle with the Task on p2: the whole bundle is refused, nothing is written
    bundle["entry"][1]["resource"]["for"] = {"reference": "Patient/p2"}
    refused = client.post("/fhir", json=bundle)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issue"][0]["expression"][0] == "Bundle.entry[1].resource.for"
    found = client.get("/fhir/ServiceRequest", params={"_summary": "count"}).json()["total"]
    assert found == 3  # sr1, sr2 and the first bundle's


def test_the_experts_steps_are_the_owners(world):
    world.resources.update(SYSTEM, "PractitionerRole", "wang-role", {
        "resourceType": "PractitionerRole", "id": "wang-role",
        "practitioner": {"reference": "Practitioner/wang"}})
    prepare(world, "scheduled")
    owned = {"owner": {"reference": "PractitionerRole/wang-role"}}
    reset(world, task("scheduled", **owned))
    with pytest.raises(CoreError) as err:  # another expert, even naming himself the owner
        put(world, as_role(EXPERT, "Practitioner/li"), task(
            "in-consultation", owner={"reference": "Practitioner/li"}))
    assert err.value.status == 403 and err.value.issues[0].expression == ["Task.owner"]
    assert state_now(world) == "scheduled"
    put(world, as_role(EXPERT, "Practitioner/wang"), task("in-consultation", **owned))
    reset(world, task("scheduled", owner={"reference": "Practitioner/wang"}))
    put(world, as_role(EXPERT, f"{BASE}/Practitioner/wang"), task(
        "in-consultation", owner={"reference": "Practitioner/wang"}))
    # an institution as owner (not triaged to a person): the role decides
    reset(world, task("scheduled", owner={"reference": "Organization/city"}))
    put(world, as_role(EXPERT, "Practitioner/li"), task(
        "in-consultation", owner={"reference": "Organization/city"}))
    assert state_now(world) == "in-consultation"


def test_a_backend_service_moves_a_consultation_but_a_patient_app_does_not(world):
    his = Caller(Policy(subject="his", client_id="his",
                        scopes=tuple(resource_scopes("system/*.cruds"))), BASE)
    put(world, his, task("draft"))
    put(world, his, task("pending-local-review"))
    assert state_now(world) == "pending-local-review"
    patient_app = Caller(Policy(subject="app", client_id="app", patient="p1",
                                scopes=tuple(resource_scopes("patient/*.cruds"))), BASE)
    with pytest.raises(CoreError) as err:
        put(world, patient_app, task("pending-acceptance"))
    assert err.value.status == 403 and "(none)" in str(err.value)
    assert state_now(world) == "pending-local-review"


def test_the_periodic_check_flags_and_metrics_show_it(world, client):
    import time

    from sonobridge.core.consultation import OverdueCheck

    body = task("pending-acceptance", authoredOn=_authored(5), priority="asap")
    world.resources.update(SYSTEM, "Task", "t1", body)
    check = OverdueCheck(workflow_of(world), interval=0.05)
    check.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current = loads(world.store.read("Task", "t1").content)
            if current.get("extension"):
                break
            time.sleep(0.05)
    finally:
        check.stop()
    assert current["extension"][0]["url"] == OVERDUE_EXTENSION
    tagged = client.get("/fhir/Task", params={"_tag": f"{FLAG_SYSTEM}|overdue"}).json()
    assert [e["resource"]["id"] for e in tagged["entry"]] == ["t1"]
    metrics = client.get("/metrics").text
    assert "sonobridge_consultation_overdue 1.0" in metrics
    assert "sonobridge_consultation_overdue_flagged_total" in metrics


def test_two_dispatchers_at_once_one_step_wins(world):
    """Accept and refuse at the same moment: the second waits for the first and is refused
    (409) instead of moving a Task whose state it did not judge."""
    import threading

    put(world, SYSTEM, task("pending-acceptance"))
    judged = threading.Event()
    outcome: dict[str, object] = {}

    def refuse() -> None:
        judged.wait(10)
        try:
            put(world, as_role(DISPATCHER), task("refused"))
            outcome["refuse"] = "done"
        except CoreError as exc:
            outcome["refuse"] = exc.status

    thread = threading.Thread(target=refuse)
    thread.start()
    with world.store.write() as writer:
        world.resources.update(as_role(DISPATCHER), "Task", "t1", task("accepted"),
                               writer=writer)
        judged.set()
        thread.join(0.5)
        assert thread.is_alive()
    thread.join(20)
    assert outcome["refuse"] == 409
    assert state_now(world) == "accepted"
    versions, _ = world.store.history(res_type="Task", res_id="t1")
    assert [loads(v.content)["businessStatus"]["coding"][0]["code"] for v in versions] == [
        "accepted", "pending-acceptance"]
