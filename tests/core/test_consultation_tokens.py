"""The consultation workflow over REST with real SMART tokens (authorization and audit on):
the clinic's doctor, its medical-affairs office, the consulting side's dispatcher and the
expert (with TOTP) each log in through the authorization code flow; each step is a PUT or a
PATCH of the Task; a step by the wrong role is 403, an illegal step 409, another patient's
request 422, all as OperationOutcomes; the Provenance trail names each user."""

from __future__ import annotations

from typing import Any

import pyotp
import pytest

from sonobridge.core.consultation import STATE_SYSTEM, STATES
from tests.auth.smart import bearer

SCOPE = "openid fhirUser user/*.cruds"
USERS = {"clinic": ("referring-clinician", "Practitioner/gp"),
         "affairs": ("medical-affairs", "Practitioner/affairs"),
         "dispatcher": ("consultation-dispatcher", "Practitioner/dispatcher"),
         "expert": ("remote-expert", "Practitioner/expert")}


@pytest.fixture
def people(smart) -> dict[str, dict[str, str]]:
    smart.seed(
        {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p1"}, "priority": "urgent"},
        {"resourceType": "ServiceRequest", "id": "sr2", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p2"}},
        {"resourceType": "Schedule", "id": "expert", "actor": [
            {"reference": "Practitioner/expert"}]},
        {"resourceType": "Slot", "id": "s1", "schedule": {"reference": "Schedule/expert"},
         "status": "free", "start": "2026-12-04T14:00:00+08:00",
         "end": "2026-12-04T14:30:00+08:00"})
    client, _ = smart.app(SCOPE)
    headers = {}
    for name, (role, fhir_user) in USERS.items():
        secret = smart.user(name, role, fhir_user=fhir_user)
        kwargs = {"otp": pyotp.TOTP(secret).now()} if secret else {}
        token = smart.user_token(client.client_id, name, SCOPE, **kwargs)
        assert token.get("fhirUser", fhir_user).endswith(fhir_user)
        headers[name] = bearer(token["access_token"])
    return headers


def task(state: str, tid: str | None = "t1", request: str = "sr1", **extra: Any
         ) -> dict[str, Any]:
    body = {"resourceType": "Task", "status": STATES[state][0], "intent": "order",
            "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state}]},
            "basedOn": [{"reference": f"ServiceRequest/{request}"}],
            "for": {"reference": "Patient/p1"}, "priority": "urgent",
            "authoredOn": "2026-12-03T09:00:00+08:00",
            "requester": {"reference": "Practitioner/gp"}, **extra}
    if tid:
        body["id"] = tid
    return body


def refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = outcome["issue"][0]["diagnostics"]
    for word in words:
        assert word in text, text
    assert outcome["issue"][0].get("expression"), outcome


def test_a_written_consultation_walked_by_four_users(smart, people):
    http = smart.http
    created = http.post("/fhir/Task", json=task("draft", tid=None), headers=people["clinic"])
    assert created.status_code == 201, created.text
    tid = created.json()["id"]

    def put(who: str, state: str, **extra: Any):
        return http.put(f"/fhir/Task/{tid}", json=task(state, tid=tid, **extra),
                        headers=people[who])

    assert put("clinic", "pending-local-review").status_code == 200
    # the doctor may not approve the own request: that is the medical-affairs office's
    refused(put("clinic", "pending-acceptance"), 403, "medical-affairs")
    refused(put("dispatcher", "pending-acceptance"), 403, "consultation-dispatcher")
    assert put("affairs", "pending-acceptance").status_code == 200
    refused(put("affairs", "completed"), 409, "待受理", "已完成")
    refused(put("expert", "accepted"), 403)
    patch = [{"op": "replace", "path": "/status", "value": "accepted"},
             {"op": "replace", "path": "/businessStatus/coding/0/code", "value": "accepted"}]
    accepted = http.patch(f"/fhir/Task/{tid}", json=patch, headers={
        **people["dispatcher"], "Content-Type": "application/json-patch+json"})
    assert accepted.status_code == 200, accepted.text
    assert put("dispatcher", "triage").status_code == 200
    refused(put("dispatcher", "scheduled"), 422, "Appointment")
    booked = http.post("/fhir/Appointment", headers=people["dispatcher"], json={
        "resourceType": "Appointment", "status": "booked",
        "basedOn": [{"reference": "ServiceRequest/sr1"}], "slot": [{"reference": "Slot/s1"}],
        "start": "2026-12-04T14:00:00+08:00", "end": "2026-12-04T14:30:00+08:00",
        "participant": [{"actor": {"reference": "Practitioner/gp"}, "status": "accepted"},
                        {"actor": {"reference": "Practitioner/expert"},
                         "status": "accepted"}]})
    assert booked.status_code == 201, booked.text
    slot = http.get("/fhir/Slot/s1", headers=people["dispatcher"]).json()
    assert slot["status"] == "busy"
    assert put("dispatcher", "scheduled").status_code == 200
    assert put("expert", "in-consultation").status_code == 200
    report = http.put("/fhir/DiagnosticReport/rep1", headers=people["expert"], json={
        "resourceType": "DiagnosticReport", "id": "rep1", "status": "final",
        "code": {"text": "会诊意见 Consultation opinion"},
        "subject": {"reference": "Patient/p1"},
        "conclusion": "肝血管瘤可能性大 Probably a hepatic haemangioma"})
    assert report.status_code in (200, 201), report.text
    output = [{"type": {"text": "会诊报告"},
               "valueReference": {"reference": "DiagnosticReport/rep1"}}]
    refused(put("expert", "completed"), 422, "final DiagnosticReport")
    assert put("expert", "completed", output=output).status_code == 200
    refused(put("expert", "feedback-given", output=output), 403, "referring-clinician")
    assert put("clinic", "feedback-given", output=output).status_code == 200
    refused(put("clinic", "draft", output=output), 409, "已反馈")

    history = http.get(f"/fhir/Task/{tid}/_history", headers=people["clinic"]).json()
    walked = [e["resource"]["businessStatus"]["coding"][0]["code"]
              for e in reversed(history["entry"])]
    assert walked == ["draft", "pending-local-review", "pending-acceptance", "accepted",
                      "triage", "scheduled", "in-consultation", "completed", "feedback-given"]
    trail = http.get("/fhir/Provenance", params={"target": f"Task/{tid}", "_count": "50"},
                     headers=people["clinic"]).json()
    steps = sorted(
        (int(e["resource"]["target"][0]["reference"].rsplit("/", 1)[1]),
         e["resource"]["agent"][0]["who"]["reference"],
         e["resource"]["agent"][0]["role"][0]["text"],
         [p["valueCoding"]["code"] for p in e["resource"]["extension"][0]["extension"]])
        for e in trail["entry"])
    assert [(who, to[-1]) for _, who, _, to in steps] == [
        ("Practitioner/gp", "draft"), ("Practitioner/gp", "pending-local-review"),
        ("Practitioner/affairs", "pending-acceptance"),
        ("Practitioner/dispatcher", "accepted"), ("Practitioner/dispatcher", "triage"),
        ("Practitioner/dispatcher", "scheduled"), ("Practitioner/expert", "in-consultation"),
        ("Practitioner/expert", "completed"), ("Practitioner/gp", "feedback-given")]
    assert steps[3][2] == "consultation-dispatcher"
    assert steps[3][3] == ["pending-acceptance", "accepted"]


def test_task_on_another_patients_request_is_422(smart, people):
    r = smart.http.put("/fhir/Task/t2", json=task("draft", tid="t2", request="sr2"),
                       headers=people["clinic"])
    refused(r, 422, "Task.for")
    assert r.json()["issue"][0]["expression"] == ["Task.for", "Task.basedOn[0]"]


def test_double_booking_is_409_for_the_dispatcher(smart, people):
    body = {"resourceType": "Appointment", "status": "booked",
            "basedOn": [{"reference": "ServiceRequest/sr1"}],
            "slot": [{"reference": "Slot/s1"}],
            "start": "2026-12-04T14:00:00+08:00", "end": "2026-12-04T14:30:00+08:00",
            "participant": [{"actor": {"reference": "Practitioner/expert"},
                             "status": "accepted"}]}
    first = smart.http.post("/fhir/Appointment", json=body, headers=people["dispatcher"])
    assert first.status_code == 201, first.text
    refused(smart.http.post("/fhir/Appointment", json=body, headers=people["dispatcher"]),
            409, "Slot/s1")
    aid = first.json()["id"]
    cancel = smart.http.put(f"/fhir/Appointment/{aid}", headers=people["dispatcher"],
                            json={**body, "id": aid, "status": "cancelled"})
    assert cancel.status_code == 200, cancel.text
    assert smart.http.get("/fhir/Slot/s1", headers=people["dispatcher"]).json()[
        "status"] == "free"
