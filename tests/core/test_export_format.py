"""Operations that answer bytes choose their own media type (``ViewDefinition/$run?_format=csv``);
the FHIR edge's 406 stands for resource answers, for every other interaction, and, before they
run, for operations that change data."""

from __future__ import annotations

import csv
import io

from sonobridge.core.operations import Operation, OperationResult

H = {"Content-Type": "application/fhir+json"}


def _report(client) -> None:
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                  "v2-0074", "code": "RUS"}]}],
              "code": {"text": "US"}, "issued": "2026-11-03T10:00:00+08:00"}
    assert client.put("/fhir/DiagnosticReport/r1", json=report, headers=H).status_code == 201


def test_run_with_format_in_the_query(client, core):
    _report(client)
    r = client.get("/fhir/ViewDefinition/us-reports/$run?_format=csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ["r1"] and rows[0]["status"] == "final"
    r = client.get("/fhir/ViewDefinition/us-reports/$run?_format=ndjson")
    assert r.status_code == 200 and r.text.count("\n") == 1 and '"r1"' in r.text
    # an output format $run does not know is its own error, naming the parameter
    r = client.get("/fhir/ViewDefinition/us-reports/$run?_format=xlsx")
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["_format"]
    # a FHIR format still works and is not passed on
    r = client.get("/fhir/ViewDefinition/us-reports/$run?_format=json")
    assert r.status_code == 200 and r.json()[0]["id"] == "r1"


def test_406_for_resources_and_state_changing_operations(client, core):
    _report(client)
    calls: list[str] = []

    def echo(call):
        calls.append(call.name)
        return OperationResult({"resourceType": "Parameters"})

    core.operations.register(Operation("echo-test", frozenset({"system"}), echo))
    core.operations.register(Operation("change-test", frozenset({"system"}), echo,
                                       affects_state=True))
    assert client.get("/fhir/DiagnosticReport/r1?_format=csv").status_code == 406
    assert client.get("/fhir/DiagnosticReport?_format=text/csv").status_code == 406
    # a resource answer in a format the client cannot take: 406 after all
    r = client.get("/fhir/$echo-test?_format=csv")
    assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/fhir/$echo-test", headers={"Accept": "text/csv"})
    assert r.status_code == 406
    assert calls == ["echo-test", "echo-test"]
    # an operation that changes data is refused before it runs
    r = client.post("/fhir/$change-test?_format=csv", json={"resourceType": "Parameters"},
                    headers=H)
    assert r.status_code == 406 and calls == ["echo-test", "echo-test"]
    assert client.get("/fhir/$echo-test").status_code == 200
