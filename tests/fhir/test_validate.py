"""Profiles over REST: validation on write (create, update, PATCH, transaction) of resources
claiming a profile the server holds, ``$validate`` at the type and instance levels, the guide's
definitions published, and ``supportedProfile`` in the CapabilityStatement."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.load import ensure_published
from tests.fhir.helpers import body, expressions, outcome_codes, post, put

SD = "http://sonobridge.org/fhir/StructureDefinition/"
REQUEST = SD + "sono-consultation-request"
TASK = SD + "sono-consultation-task"
APPOINTMENT = SD + "sono-consultation-appointment"


def example(rid: str) -> dict[str, Any]:
    return copy.deepcopy(next(e for e in content.examples() if e["id"] == rid))


@pytest.fixture
def request_() -> dict[str, Any]:
    return example("example-consultation-request")


@pytest.fixture
def task() -> dict[str, Any]:
    """The example Task in its first state (the workflow accepts a new Task only there)."""
    res = example("example-consultation-task")
    res["status"] = "draft"
    res["businessStatus"]["coding"][0].update(code="draft", display="草稿")
    return res


@pytest.fixture
def appointment() -> dict[str, Any]:
    return example("example-consultation-appointment")


def _refused(response: Any, path: str, code: str | None = None) -> dict[str, Any]:
    """A 422 whose OperationOutcome names ``path`` (and issue ``code``)."""
    assert response.status_code == 422, response.text
    assert path in expressions(response), expressions(response)
    if code is not None:
        assert code in outcome_codes(response)
    result: dict[str, Any] = body(response)
    return result


# ----------------------------------------------------------------------------- on write

def test_conforming_resources_are_stored(client: Any, request_: dict[str, Any],
                                         task: dict[str, Any],
                                         appointment: dict[str, Any]) -> None:
    for res in (request_, task, appointment):
        r = put(client, f"/fhir/{res['resourceType']}/{res['id']}", res)
        assert r.status_code == 201, r.text


def test_missing_required_element(client: Any, request_: dict[str, Any]) -> None:
    del request_["identifier"]
    r = post(client, "/fhir/ServiceRequest", request_)
    outcome = _refused(r, "ServiceRequest.identifier", "required")
    assert "at least 1" in outcome["issue"][0]["diagnostics"]
    # the same resource without the profile claim is an ordinary ServiceRequest
    del request_["meta"]
    assert post(client, "/fhir/ServiceRequest", request_).status_code == 201


def test_value_outside_a_required_binding(client: Any, task: dict[str, Any],
                                          request_: dict[str, Any]) -> None:
    task["businessStatus"]["coding"][0]["code"] = "no-such-state"
    _refused(post(client, "/fhir/Task", task), "Task.businessStatus", "code-invalid")
    # the consultation type inside the extension is bound too (the extension's own profile)
    request_["extension"][0]["valueCoding"]["code"] = "phone"
    _refused(post(client, "/fhir/ServiceRequest", request_),
             "ServiceRequest.extension[0].valueCoding", "code-invalid")


def test_wrong_slice(client: Any, request_: dict[str, Any],
                     appointment: dict[str, Any]) -> None:
    # category 远程超声会诊 is a required slice (pattern on the coding)
    request_["category"] = [{"coding": [{"system": content.SCT, "code": "363679005"}]}]
    outcome = _refused(post(client, "/fhir/ServiceRequest", request_),
                       "ServiceRequest.category", "required")
    assert "remoteUltrasound" in outcome["issue"][0]["diagnostics"]
    # the consultation type extension is a required slice (by url)
    request2 = example("example-consultation-request")
    request2["extension"] = request2["extension"][1:]
    outcome = _refused(post(client, "/fhir/ServiceRequest", request2),
                       "ServiceRequest.extension")
    assert "consultationType" in outcome["issue"][0]["diagnostics"]
    # twice the same slice: at most 1
    request3 = example("example-consultation-request")
    request3["extension"].append(copy.deepcopy(request3["extension"][0]))
    _refused(post(client, "/fhir/ServiceRequest", request3), "ServiceRequest.extension",
             "structure")
    # a code outside the appointment's slices (a written or video consultation's)
    appointment["serviceType"][0]["coding"][0]["code"] = "imaging"
    outcome = _refused(post(client, "/fhir/Appointment", appointment), "Appointment",
                       "invariant")
    assert "sono-appt-2" in outcome["issue"][0]["diagnostics"]


def test_failing_invariants(client: Any, task: dict[str, Any], request_: dict[str, Any],
                            appointment: dict[str, Any]) -> None:
    task["status"] = "requested"  # businessStatus says 草稿 (draft)
    outcome = _refused(post(client, "/fhir/Task", task), "Task", "invariant")
    assert "sono-task-1" in outcome["issue"][0]["diagnostics"]
    request_["extension"][0]["valueCoding"]["code"] = "video"  # no occurrence
    outcome = _refused(post(client, "/fhir/ServiceRequest", request_), "ServiceRequest",
                       "invariant")
    assert "sono-req-1" in outcome["issue"][0]["diagnostics"]
    request_["occurrencePeriod"] = {"start": "2026-12-02T14:00:00+08:00",
                                    "end": "2026-12-02T18:00:00+08:00"}
    assert post(client, "/fhir/ServiceRequest", request_).status_code == 201
    appointment["end"] = "2026-12-02T13:00:00+08:00"
    outcome = _refused(post(client, "/fhir/Appointment", appointment), "Appointment",
                       "invariant")
    assert "sono-appt-1" in outcome["issue"][0]["diagnostics"]


def test_pattern_types_and_reference_targets(client: Any, request_: dict[str, Any],
                                             task: dict[str, Any]) -> None:
    task["intent"] = "plan"
    _refused(post(client, "/fhir/Task", task), "Task.intent", "value")
    request_["requester"] = {"reference": "Patient/example-patient"}
    outcome = _refused(post(client, "/fhir/ServiceRequest", request_),
                       "ServiceRequest.requester", "invalid")
    assert "PractitionerRole" in outcome["issue"][0]["diagnostics"]
    request2 = example("example-consultation-request")
    request2["occurrenceDateTime"] = "2026-12-02T14:00:00+08:00"
    outcome = _refused(post(client, "/fhir/ServiceRequest", request2),
                       "ServiceRequest.occurrenceDateTime", "structure")
    assert "Period" in outcome["issue"][0]["diagnostics"]


def test_every_problem_is_reported(client: Any, request_: dict[str, Any]) -> None:
    del request_["identifier"]
    del request_["authoredOn"]
    request_["requester"] = {"reference": "Device/d1"}
    paths = expressions(post(client, "/fhir/ServiceRequest", request_))
    assert {"ServiceRequest.identifier", "ServiceRequest.authoredOn",
            "ServiceRequest.requester"} <= set(paths)


def test_unknown_profiles_are_not_an_error(client: Any, request_: dict[str, Any]) -> None:
    request_["meta"]["profile"] = ["http://example.org/StructureDefinition/elsewhere"]
    del request_["identifier"]
    assert post(client, "/fhir/ServiceRequest", request_).status_code == 201


def test_update_patch_and_transaction_are_validated(client: Any,
                                                    request_: dict[str, Any]) -> None:
    assert put(client, "/fhir/ServiceRequest/c1", {**request_, "id": "c1"}).status_code == 201
    broken = {**request_, "id": "c1"}
    del broken["authoredOn"]
    _refused(put(client, "/fhir/ServiceRequest/c1", broken), "ServiceRequest.authoredOn")
    r = client.patch("/fhir/ServiceRequest/c1", content=orjson.dumps(
        [{"op": "remove", "path": "/identifier"}]),
        headers={"Content-Type": "application/json-patch+json"})
    _refused(r, "ServiceRequest.identifier")
    stored = body(client.get("/fhir/ServiceRequest/c1"))
    assert stored["meta"]["versionId"] == "1" and stored["identifier"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Wang"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**broken, "id": "c2"},
         "request": {"method": "PUT", "url": "ServiceRequest/c2"}}]}
    r = post(client, "/fhir", bundle)
    assert r.status_code == 422, r.text
    assert client.get("/fhir/Patient?family=Wang").json().get("total", 0) == 0


# ----------------------------------------------------------------------------- $validate

def _issues(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    data = body(response)
    assert data["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = data["issue"]
    return issues


def test_validate_type_level(client: Any, request_: dict[str, Any]) -> None:
    ok = _issues(post(client, "/fhir/ServiceRequest/$validate", request_))
    assert [i["severity"] for i in ok] == ["information"]
    assert "no issues" in ok[0]["diagnostics"] and REQUEST in ok[0]["diagnostics"]
    del request_["identifier"]
    bad = _issues(post(client, "/fhir/ServiceRequest/$validate", request_))
    assert [(i["severity"], i["expression"]) for i in bad] == [
        ("error", ["ServiceRequest.identifier"])]
    # nothing was stored by $validate
    assert client.get("/fhir/ServiceRequest").json().get("total", 0) == 0


def test_validate_with_profile_parameter(client: Any, request_: dict[str, Any]) -> None:
    del request_["meta"]
    del request_["identifier"]
    # without the profile: an ordinary ServiceRequest
    plain = _issues(post(client, "/fhir/ServiceRequest/$validate", request_))
    assert [i["severity"] for i in plain] == ["information"]
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": request_},
        {"name": "profile", "valueUri": REQUEST}, {"name": "mode", "valueCode": "create"}]}
    found = _issues(post(client, "/fhir/ServiceRequest/$validate", params))
    assert any(i["expression"] == ["ServiceRequest.identifier"] for i in found)
    # as a query parameter, with a version
    found = _issues(post(client, f"/fhir/ServiceRequest/$validate?profile={REQUEST}|1.0",
                         request_))
    assert any(i["expression"] == ["ServiceRequest.identifier"] for i in found)
    # a profile the server does not hold
    unknown = _issues(post(client, "/fhir/ServiceRequest/$validate?profile=http://x.org/p",
                           request_))
    assert [(i["severity"], i["code"]) for i in unknown] == [("error", "not-found")]


def test_validate_instance_level(client: Any, request_: dict[str, Any]) -> None:
    assert put(client, "/fhir/ServiceRequest/c1", {**request_, "id": "c1"}).status_code == 201
    stored = _issues(client.get("/fhir/ServiceRequest/c1/$validate"))
    assert stored[0]["severity"] == "information"
    # the stored one against another profile: wrong type
    other = _issues(client.get(f"/fhir/ServiceRequest/c1/$validate?profile={TASK}"))
    assert other[0]["severity"] == "error" and "is for Task" in other[0]["diagnostics"]
    # update mode: the id must be the URL's
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {**request_, "id": "other"}},
        {"name": "mode", "valueCode": "update"}]}
    found = _issues(post(client, "/fhir/ServiceRequest/c1/$validate", params))
    assert found[0]["expression"] == ["ServiceRequest.id"]
    deleted = _issues(client.get("/fhir/ServiceRequest/c1/$validate?mode=delete"))
    assert deleted[0]["severity"] == "information"
    assert client.get("/fhir/ServiceRequest/nope/$validate").status_code == 404


def test_validate_bad_input(client: Any, request_: dict[str, Any]) -> None:
    r = client.get("/fhir/ServiceRequest/$validate")
    assert r.status_code == 400 and "resource" in expressions(r)
    r = post(client, "/fhir/ServiceRequest/$validate?mode=burn", request_)
    assert r.status_code == 400 and "mode" in expressions(r)
    r = post(client, "/fhir/ServiceRequest/$validate?mode=delete", request_)
    assert r.status_code == 400
    wrong = _issues(post(client, "/fhir/Task/$validate", request_))
    assert wrong[0]["severity"] == "error" and wrong[0]["expression"] == ["resourceType"]
    # a structural error is reported, not raised
    request_["status"] = "no-such-status"
    found = _issues(post(client, "/fhir/ServiceRequest/$validate", request_))
    assert any(i["severity"] == "error" and "ServiceRequest.status" in i.get("expression", [])
               for i in found)


# ----------------------------------------------------------------------------- publication

def test_capability_statement_lists_profiles_and_validate(client: Any) -> None:
    cs = body(client.get("/fhir/metadata"))
    assert cs["implementationGuide"] == ["http://sonobridge.org/fhir/ImplementationGuide/"
                                         "sonobridge"]
    rest = cs["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert by_type["ServiceRequest"]["supportedProfile"] == [REQUEST]
    assert by_type["Task"]["supportedProfile"] == [TASK]
    assert by_type["Appointment"]["supportedProfile"] == [APPOINTMENT]
    assert SD + "sono-ultrasound-report" in by_type["DiagnosticReport"]["supportedProfile"]
    assert "supportedProfile" not in by_type["Patient"]
    for res_type in ("ServiceRequest", "Patient"):
        assert {"name": "validate", "definition":
                "http://hl7.org/fhir/OperationDefinition/Resource-validate"} in [
            {k: op[k] for k in ("name", "definition")} for op in by_type[res_type]["operation"]]
    assert not any(op["name"] == "validate" for op in rest.get("operation", []))


def test_guide_definitions_are_published(core: Any, client: Any) -> None:
    assert ensure_published(core.resources, core.server).counts["StructureDefinition"] == 19
    for path in ("StructureDefinition/sono-consultation-request",
                 "StructureDefinition/sono-consultation-type",
                 "StructureDefinition/sono-consultation-purpose",
                 "ValueSet/sono-consultation-business-status",
                 "CodeSystem/sono-consultation-purpose"):
        r = client.get(f"/fhir/{path}")
        assert r.status_code == 200, path
    cs = body(client.get("/fhir/CodeSystem/sono-consultation-business-status"))
    concept = next(c for c in cs["concept"] if c["code"] == "pending-local-review")
    assert concept["display"] == "待本院审核"
    assert concept["designation"] == [{"language": "en", "value":
                                       "Awaiting the requesting hospital's review"}]
    ext = body(client.get("/fhir/StructureDefinition/sono-consultation-type"))
    assert ext["type"] == "Extension" and ext["kind"] == "complex-type"
    value = next(e for e in ext["snapshot"]["element"] if e["id"] == "Extension.value[x]")
    assert value["binding"]["strength"] == "required"
    # a restart writes nothing; a changed stored definition is put back
    assert not ensure_published(core.resources, core.server).counts
    vs = body(client.get("/fhir/ValueSet/sono-consultation-type"))
    vs["title"] = "changed"
    assert put(client, "/fhir/ValueSet/sono-consultation-type", vs).status_code == 200
    assert ensure_published(core.resources, core.server).counts == {"ValueSet": 1}


def test_sample_consultation_conforms(core: Any, client: Any) -> None:
    """The sample data (another domain's) loads through the validating write path, and each
    profiled sample resource answers $validate with no issue at all (not even a warning)."""
    from sonobridge.app.sample import load_sample

    assert load_sample(core, "http://sono.test/fhir") > 0
    for path, profile in (("ServiceRequest/sample-consultation", REQUEST),
                          ("Task/sample-consultation-task", TASK),
                          ("Appointment/sample-consultation-appointment", APPOINTMENT),
                          ("DiagnosticReport/sample-us-report", SD + "sono-ultrasound-report")):
        stored = body(client.get(f"/fhir/{path}"))
        assert profile in stored["meta"]["profile"], path
        found = _issues(client.get(f"/fhir/{path}/$validate"))
        assert [i["severity"] for i in found] == ["information"], (path, found)
