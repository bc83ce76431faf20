"""DiagnosticReport status rules (core/reports.py): R4's order, a final report changed only by
amendment, who signs, and results about the report's subject."""

from __future__ import annotations

import pytest

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from tests.security.test_compartments import token

REPORT = {"resourceType": "DiagnosticReport", "id": "r1", "status": "preliminary",
          "code": {"text": "腹部超声 Abdominal US"},
          "subject": {"reference": "Patient/p1"}, "conclusion": "未见异常"}


def put(client, body: dict, **headers):
    return client.put(f"/fhir/DiagnosticReport/{body['id']}", json=body, headers=headers)


def with_(**changes) -> dict:
    return {**REPORT, **changes}


def outcome(r) -> dict:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def test_forward_path_and_amendments(client):
    assert put(client, with_(status="registered")).status_code == 201
    assert put(client, with_(status="preliminary")).status_code == 200
    assert put(client, with_(status="final")).status_code == 200
    r = put(client, with_(status="final", conclusion="改了 changed in place"))
    assert r.status_code == 409
    issue = outcome(r)
    assert issue["code"] == "business-rule" and issue["expression"] == [
        "DiagnosticReport.status"]
    assert "amendment" in issue["diagnostics"]
    # the same final report sent again is no change: accepted
    assert put(client, with_(status="final")).status_code == 200
    assert put(client, with_(status="amended", conclusion="补充 amended")).status_code == 200
    assert put(client, with_(status="amended", conclusion="again")).status_code == 200
    assert put(client, with_(status="corrected", conclusion="corrected")).status_code == 200
    r = put(client, with_(status="final", conclusion="corrected"))
    assert r.status_code == 409 and "cannot go back" in outcome(r)["diagnostics"]
    r = put(client, with_(status="preliminary"))
    assert r.status_code == 409
    history = client.get("/fhir/DiagnosticReport/r1/_history").json()
    statuses = [e["resource"]["status"] for e in history["entry"]]
    assert statuses[:2] == ["corrected", "amended"] and "final" in statuses
    assert put(client, with_(status="entered-in-error")).status_code == 200
    r = put(client, with_(status="amended", conclusion="x"))
    assert r.status_code == 409 and "no longer" in outcome(r)["diagnostics"]


def test_going_back_before_final_and_amending_a_draft(client):
    assert put(client, with_(status="preliminary")).status_code == 201
    r = put(client, with_(status="registered"))
    assert r.status_code == 409 and "does not go back" in outcome(r)["diagnostics"]
    r = put(client, with_(status="amended"))
    assert r.status_code == 409 and "never final" in outcome(r)["diagnostics"]
    assert put(client, with_(status="cancelled")).status_code == 200
    assert put(client, with_(status="final")).status_code == 409


def test_patch_follows_the_same_rules(client):
    assert put(client, with_(status="final")).status_code == 201
    r = client.patch("/fhir/DiagnosticReport/r1", json=[
        {"op": "replace", "path": "/conclusion", "value": "patched in place"}],
        headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 409, r.text
    r = client.patch("/fhir/DiagnosticReport/r1", json=[
        {"op": "replace", "path": "/conclusion", "value": "patched"},
        {"op": "replace", "path": "/status", "value": "appended"}],
        headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text


def test_results_must_be_about_the_reports_subject(smart):
    # the SMART world holds o1 (p1) and o2 (p2), and dr1 (p1) pointing at both (seeded)
    expert = {"Authorization": f"Bearer {token(smart, 'user/*.cruds', role='remote-expert')}"}
    ok = smart.http.put("/fhir/DiagnosticReport/r1", headers=expert, json=with_(
        result=[{"reference": "Observation/o1"}]))
    assert ok.status_code == 201, ok.text
    r = smart.http.put("/fhir/DiagnosticReport/r1", headers=expert, json=with_(
        result=[{"reference": "Observation/o1"},
                {"reference": "http://sono.test/fhir/Observation/o2"}]))
    assert r.status_code == 422, r.text
    issue = outcome(r)
    assert issue["expression"] == ["DiagnosticReport.result[1]"]
    assert "Patient/p2" in issue["diagnostics"]
    r = smart.http.post("/fhir/DiagnosticReport", headers=expert, json={
        **{k: v for k, v in REPORT.items() if k != "id"},
        "result": [{"reference": "Observation/o2"}]})
    assert r.status_code == 422
    # nothing was written by the refused requests
    r = smart.http.get("/fhir/DiagnosticReport/r1", headers=expert)
    assert r.json()["result"] == [{"reference": "Observation/o1"}]
    # a patient-confined token gets no hint about another patient's Observation
    confined = {"Authorization": "Bearer " + token(smart, "patient/*.cruds", patient="p1",
                                                  role="remote-expert")}
    r = smart.http.put("/fhir/DiagnosticReport/r1", headers=confined, json=with_(
        result=[{"reference": "Observation/o2"}]))
    assert r.status_code == 403, r.text


def test_only_a_remote_expert_signs(core):
    def caller(role: str | None) -> Caller:
        return Caller(Policy(subject=f"user-{role}", client_id="app", role=role,
                             unrestricted=True), "http://sono.test/fhir")

    core.resources.update(caller("sonographer"), "DiagnosticReport", "r2",
                          with_(id="r2", status="preliminary"))
    with pytest.raises(CoreError) as refused:
        core.resources.update(caller("sonographer"), "DiagnosticReport", "r2",
                              with_(id="r2", status="final"))
    assert refused.value.status == 403
    assert "remote-expert" in str(refused.value)
    core.resources.update(caller("remote-expert"), "DiagnosticReport", "r2",
                          with_(id="r2", status="final"))
    with pytest.raises(CoreError) as refused:
        core.resources.update(caller("referring-clinician"), "DiagnosticReport", "r2",
                              with_(id="r2", status="amended", conclusion="x"))
    assert refused.value.status == 403
    with pytest.raises(CoreError) as refused:  # signing on create too
        core.resources.update(caller("trainee"), "DiagnosticReport", "r3",
                              with_(id="r3", status="final"))
    assert refused.value.status == 403
    core.resources.update(caller(None), "DiagnosticReport", "r3", with_(id="r3",
                                                                        status="final"))


def test_signing_with_real_tokens(smart):
    expert = token(smart, "user/*.cruds", role="remote-expert")
    r = smart.http.put("/fhir/DiagnosticReport/r9", json=with_(id="r9", status="final"),
                       headers={"Authorization": f"Bearer {expert}"})
    assert r.status_code == 201, r.text
    clinician = token(smart, "user/*.cruds", role="referring-clinician")
    r = smart.http.put("/fhir/DiagnosticReport/r9", json=with_(
        id="r9", status="amended", conclusion="x"),
        headers={"Authorization": f"Bearer {clinician}"})
    assert r.status_code == 403
