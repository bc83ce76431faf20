"""The sample loaded on an empty database (app/sample.py): the ids the docs and tests rely on,
the consultation's history walking the states to 已完成 with a Provenance per step and user,
the expert's Schedule with a booked and free Slots, and every resource valid against the
profile it claims. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from sonobridge.app.sample import load_sample
from sonobridge.core.consultation import STATE_SYSTEM, workflow_of
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.profiles import check, registry_of
from sonobridge.core.resources import SearchSpec
from sonobridge.jsonio import dumps, loads

BASE = "http://127.0.0.1:8080/fhir"
ANYONE = Caller(Policy.open(), BASE)
IDS = ["Organization/township-clinic", "Organization/city-hospital",
       "Practitioner/referring-gp", "Practitioner/sample-expert",
       "PractitionerRole/sample-expert-role", "PractitionerRole/sample-referring-gp-role",
       "Patient/sample-patient", "ServiceRequest/sample-abdominal-us",
       "ServiceRequest/sample-consultation", "Task/sample-consultation-task",
       "Appointment/sample-consultation-appointment", "DiagnosticReport/sample-us-report",
       "Schedule/sample-expert-schedule", "Slot/sample-slot-1", "Slot/sample-slot-2",
       "Slot/sample-slot-3", "ImagingStudy/sample-us-study"]


@pytest.fixture
def loaded(core):
    assert not core.store.exists_any()
    count = load_sample(core, BASE)
    assert count == 16 + 12  # the bundle, then the walk's 9 Task versions and 3 resources
    return core


def read(core, ref: str) -> dict:
    res_type, res_id = ref.split("/")
    stored = core.store.read(res_type, res_id)
    assert stored is not None and not stored.deleted, ref
    return loads(stored.content)


def test_the_documented_ids_are_there(loaded):
    for ref in IDS:
        read(loaded, ref)
    order = read(loaded, "ServiceRequest/sample-abdominal-us")  # the older sample, unchanged
    assert order["subject"] == {"reference": "Patient/sample-patient"}


def test_the_task_history_walks_the_states_with_a_provenance_per_step(loaded):
    versions, _ = loaded.store.history(res_type="Task", res_id="sample-consultation-task")
    walked = [loads(v.content)["businessStatus"]["coding"][0] for v in reversed(versions)]
    assert all(c["system"] == STATE_SYSTEM for c in walked)
    assert [c["code"] for c in walked] == [
        "draft", "pending-local-review", "pending-acceptance", "accepted", "triage",
        "scheduled", "in-consultation", "report-pending-review", "completed"]
    assert walked[-1]["display"] == "已完成"
    found = loaded.resources.search(ANYONE, SearchSpec("Provenance", [
        ("target", "Task/sample-consultation-task"), ("_count", "50")]))
    provs = [e["resource"] for e in loads(dumps(found.bundle))["entry"]]
    by_version = {int(p["target"][0]["reference"].rsplit("/", 1)[1]):
                  p["agent"][0]["who"]["reference"] for p in provs}
    assert by_version == {1: "Practitioner/referring-gp", 2: "Practitioner/referring-gp",
                          3: "Practitioner/sample-affairs", 4: "Practitioner/sample-dispatcher",
                          5: "Practitioner/sample-dispatcher",
                          6: "Practitioner/sample-dispatcher", 7: "Practitioner/sample-expert",
                          8: "Practitioner/sample-expert", 9: "Practitioner/sample-expert"}


def test_the_consultation_hangs_together(loaded):
    task = read(loaded, "Task/sample-consultation-task")
    request = read(loaded, "ServiceRequest/sample-consultation")
    assert task["for"] == request["subject"] == {"reference": "Patient/sample-patient"}
    assert task["status"] == "completed"
    assert task["owner"] == {"reference": "PractitionerRole/sample-expert-role"}
    report = read(loaded, task["output"][0]["valueReference"]["reference"])
    assert report["status"] == "final" and report["subject"] == request["subject"]
    appointment = read(loaded, "Appointment/sample-consultation-appointment")
    assert appointment["basedOn"] == [{"reference": "ServiceRequest/sample-consultation"}]
    assert appointment["start"].endswith("+08:00")  # shown in Asia/Shanghai
    assert read(loaded, "Slot/sample-slot-1")["status"] == "busy"
    assert {read(loaded, f"Slot/sample-slot-{i}")["status"] for i in (2, 3)} == {"free"}
    free = loaded.resources.search(ANYONE, SearchSpec("Slot", [
        ("schedule", "Schedule/sample-expert-schedule"), ("status", "free")]))
    assert {e["resource"]["id"] for e in loads(dumps(free.bundle))["entry"]} == {
        "sample-slot-2", "sample-slot-3"}
    assert workflow_of(loaded).flag_overdue() == 0  # a completed consultation is not late


def test_every_profiled_sample_resource_is_valid(loaded):
    registry = registry_of(loaded)
    profiled = {"ServiceRequest/sample-consultation": "sono-consultation-request",
                "Task/sample-consultation-task": "sono-consultation-task",
                "Appointment/sample-consultation-appointment": "sono-consultation-appointment",
                "DiagnosticReport/sample-us-report": "sono-ultrasound-report"}
    for ref, profile in profiled.items():
        resource = read(loaded, ref)
        assert resource["meta"]["profile"] == [
            f"http://sonobridge.org/fhir/StructureDefinition/{profile}"]
        issues, unknown = check(registry, resource)
        assert unknown == [], ref
        assert [i.diagnostics for i in issues if i.severity in ("error", "fatal")] == [], ref
