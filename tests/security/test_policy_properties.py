"""Property tests for the policy (security hardening): for random tokens confined to patient A
(role x scope) and random requests over a fixture of two patients,

- a request touches A's compartment only: B's record is byte-for-byte the same afterwards;
- what a request answers about B's data equals what it answers when nothing exists: each
  request is sent twice, once naming B's data and once naming a value no resource holds, and
  the two answers (status and body, with the named value and server-made ids masked) must be
  equal. Any difference is an existence oracle.

Runs on both databases (the ``db_url`` fixture). Deterministic (``derandomize``) and bounded.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonobridge.core.roles import ROLES
from tests.auth.smart import bearer
from tests.security.test_compartments import token

# B's data: what the requests name. Each has a twin that no resource holds (drawn per example).
B_PATIENT = {"resourceType": "Patient", "id": "patient-b",
             "name": [{"family": "Zhao", "given": ["secret-given-b"]}],
             "identifier": [{"system": "urn:mrn", "value": "mrn-b"}]}
B_OBS = {"resourceType": "Observation", "id": "observation-b", "status": "final",
         "identifier": [{"system": "urn:t", "value": "obs-b"}],
         "code": {"coding": [{"system": "urn:t", "code": "code-b"}]},
         "valueString": "value-b", "note": [{"text": "secret-note-b"}],
         "subject": {"reference": "Patient/patient-b"}}
# A's observation wrongly derived from B's: a chain through it must not reveal B's values.
A_DERIVED = {"resourceType": "Observation", "id": "oa", "status": "final",
             "code": {"text": "derived"}, "subject": {"reference": "Patient/p1"},
             "derivedFrom": [{"reference": "Observation/observation-b"}]}
# What the requests name in B's world, by placeholder.
B_VALUES = {"pid": "patient-b", "oid": "observation-b", "mrn": "mrn-b", "ident": "obs-b",
            "code": "code-b", "value": "value-b", "family": "Zhao"}


def a_obs(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "new"},
            "subject": {"reference": "Patient/p1"}, **extra}


# (method, path, headers, body): {name} is replaced by B's value or by its unheld twin.
REQUESTS: list[tuple[str, str, dict[str, str], Any]] = [
    ("GET", "/fhir/Patient/{pid}", {}, None),
    ("GET", "/fhir/Observation/{oid}", {}, None),
    ("GET", "/fhir/Observation/{oid}/_history/1", {}, None),
    ("GET", "/fhir/Observation/{oid}/_history", {}, None),
    ("GET", "/fhir/Patient/{pid}/$everything", {}, None),
    ("GET", "/fhir/Patient/{pid}/Observation", {}, None),
    ("GET", "/fhir/Observation?_id={oid}", {}, None),
    ("GET", "/fhir/Observation?patient={pid}", {}, None),
    ("GET", "/fhir/Observation?identifier=urn:t|{ident}", {}, None),
    ("GET", "/fhir/Observation?code=urn:t|{code}", {}, None),
    ("GET", "/fhir/Observation?value-string={value}", {}, None),
    ("GET", "/fhir/Observation?subject:Patient.identifier=urn:mrn|{mrn}", {}, None),
    ("GET", "/fhir/Observation?subject:Patient.family={family}", {}, None),
    ("GET", "/fhir/Observation?derived-from:Observation.value-string={value}", {}, None),
    ("GET", "/fhir/Patient?_has:Observation:subject:code=urn:t|{code}", {}, None),
    ("GET", "/fhir/Patient?identifier=urn:mrn|{mrn}", {}, None),
    ("GET", "/fhir/Patient?family={family}", {}, None),
    ("GET", "/fhir/Observation?_id={oid}&_revinclude=Provenance:target", {}, None),
    ("DELETE", "/fhir/Observation?identifier=urn:t|{ident}", {}, None),
    ("PUT", "/fhir/Observation?identifier=urn:t|{ident}", {}, a_obs()),
    ("POST", "/fhir/Observation", {"If-None-Exist": "identifier=urn:t|{ident}"}, a_obs()),
    ("PATCH", "/fhir/Observation?identifier=urn:t|{ident}",
     {"Content-Type": "application/json-patch+json"},
     [{"op": "replace", "path": "/status", "value": "amended"}]),
    ("POST", "/fhir", {}, {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7c1d6a0e-0000-4000-8000-000000000001", "resource": a_obs(
            derivedFrom=[{"reference": "Observation?identifier=urn:t|{ident}"}]),
         "request": {"method": "POST", "url": "Observation"}}]}),
    ("POST", "/fhir", {}, {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": a_obs(), "request": {
            "method": "POST", "url": "Observation",
            "ifNoneExist": "subject:Patient.identifier=urn:mrn|{mrn}"}}]}),
    ("GET", "/dicomweb/studies?PatientID={pid}", {"Accept": "application/dicom+json"}, None),
]
SCOPES = ["patient/*.rs", "patient/*.cruds", "patient/Observation.cruds patient/Patient.rs",
          "patient/Observation.rs", "patient/*.cud", "patient/Patient.r"]
# Server-made values that differ between two otherwise equal answers.
_VOLATILE = {"id", "lastUpdated", "versionId", "timestamp", "fullUrl", "etag", "location",
             "lastModified"}


def fill(template: Any, values: dict[str, str]) -> Any:
    text = json.dumps(template) if not isinstance(template, str) else template
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text if isinstance(template, str) else json.loads(text)


def send(smart, tok: str, method: str, path: str, headers: dict[str, str], body: Any):
    return smart.http.request(method, path, headers={**bearer(tok), **headers},
                              content=None if body is None else json.dumps(body))


def masked(response, values: dict[str, str]) -> tuple[int, Any]:
    """The answer with the named values, server-made ids and times masked."""
    text = response.text
    for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
        text = text.replace(value, f"<{name}>")
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text)
    try:
        body: Any = json.loads(text)
    except ValueError:
        return response.status_code, text

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in _VOLATILE}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return response.status_code, strip(body)


def b_record(smart) -> list[tuple[str, str, str]]:
    """B's compartment as (type, id, version), read with full rights."""
    system = token(smart, "system/*.rs")
    bundle = smart.http.get("/fhir/Patient/patient-b/$everything?_count=1000",
                            headers=bearer(system)).json()
    return sorted((e["resource"]["resourceType"], e["resource"]["id"],
                   e["resource"]["meta"]["versionId"]) for e in bundle.get("entry", []))


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(role=st.sampled_from([None, *ROLES]), scope=st.sampled_from(SCOPES),
       request=st.sampled_from(REQUESTS), twin=st.integers(0, 2**32))
def test_a_token_for_a_touches_only_a_and_learns_nothing_of_b(smart, role, scope, request,
                                                               twin):
    if not getattr(smart, "_b_seeded", False):
        smart.seed(B_PATIENT, B_OBS, A_DERIVED)
        smart._b_seeded = True
    tok = token(smart, scope, patient="p1", role=role)
    method, path, headers, body = request
    before = b_record(smart)
    nothing = {k: f"{v}-none-{twin}-{uuid.uuid4().hex[:6]}" for k, v in B_VALUES.items()}
    answers = []
    for values in (nothing, B_VALUES):
        response = send(smart, tok, method, fill(path, values), fill(headers, values),
                        None if body is None else fill(body, values))
        assert response.status_code < 500, response.text
        assert "secret-" not in response.text  # B's content never shows
        answers.append(masked(response, values))
    assert answers[0] == answers[1], f"{method} {path} as {role} with {scope}"
    assert b_record(smart) == before
