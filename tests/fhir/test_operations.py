"""``$name`` URLs reach the core's operation registry at each level, with each way of passing
parameters, and the CapabilityStatement lists what is registered."""

from __future__ import annotations

from sonobridge.core.operations import Operation, OperationCall, OperationResult
from tests.fhir.helpers import body


def _echo(call: OperationCall) -> OperationResult:
    resource = call.resource_param()
    return OperationResult({"resourceType": "Parameters", "parameter": [
        {"name": "level", "valueString": call.level},
        {"name": "type", "valueString": call.res_type or "-"},
        {"name": "id", "valueString": call.res_id or "-"},
        {"name": "x", "valueString": str(call.param("x", "-"))},
        {"name": "resource", "valueString": resource["resourceType"] if resource else "-"},
    ]})


def _values(r) -> dict[str, str]:
    return {p["name"]: p["valueString"] for p in body(r)["parameter"]}


def test_levels_and_parameters(core, client):
    core.operations.register(Operation("echo", frozenset({"system", "type", "instance"}),
                                       _echo, types=frozenset({"Patient"})))
    core.operations.register(Operation("csv", frozenset({"system"}), lambda call:
                                       OperationResult(b"a,b\r\n1,2\r\n",
                                                       content_type="text/csv")))
    assert _values(client.get("/fhir/$echo?x=1")) == {
        "level": "system", "type": "-", "id": "-", "x": "1", "resource": "-"}
    assert _values(client.get("/fhir/Patient/$echo?x=2"))["level"] == "type"
    r = client.post("/fhir/Patient/p1/$echo", json={"resourceType": "Parameters", "parameter": [
        {"name": "x", "valueString": "3"},
        {"name": "resource", "resource": {"resourceType": "Patient"}}]},
        headers={"Content-Type": "application/fhir+json"})
    assert _values(r) == {"level": "instance", "type": "Patient", "id": "p1", "x": "3",
                          "resource": "Patient"}
    r = client.post("/fhir/Patient/$echo", json={"resourceType": "Patient"},
                    headers={"Content-Type": "application/fhir+json"})
    assert _values(r)["resource"] == "Patient"
    r = client.post("/fhir/Patient/$echo", data={"x": "4"})
    assert _values(r)["x"] == "4"
    r = client.get("/fhir/$csv")
    assert r.status_code == 200 and r.content == b"a,b\r\n1,2\r\n"
    assert r.headers["content-type"].startswith("text/csv")
    # Not on this type; not at all; twice the same single-valued parameter.
    r = client.get("/fhir/Observation/$echo")
    assert r.status_code == 400 and "not defined on Observation" in r.text
    r = client.get("/fhir/$nothing")
    assert r.status_code == 404 and body(r)["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/$echo?x=1&x=2").status_code == 400
    assert client.delete("/fhir/$echo").status_code == 405
    # Listed in the CapabilityStatement (built after registration).
    cs = body(client.get("/fhir/metadata"))
    rest = cs["rest"][0]
    patient = next(res for res in rest["resource"] if res["type"] == "Patient")
    assert {"name": "echo", "definition": "urn:sonobridge:operation:echo"} in \
        patient["operation"]
    assert any(op["name"] == "csv" for op in rest["operation"])


def test_state_changing_operation_needs_post(core, client):
    core.operations.register(Operation("touch", frozenset({"system"}), lambda call:
                                       OperationResult(None, 204), affects_state=True))
    r = client.get("/fhir/$touch")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert client.post("/fhir/$touch").status_code == 204
