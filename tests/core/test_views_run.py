"""``ViewDefinition/$run`` over the store: formats, parameters, shipped views, bad views as
OperationOutcomes with paths, and rows only from what the caller's token may read."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from sonobridge.core.views.definition import compile_view
from sonobridge.core.views.service import RunOptions, ViewService
from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures
from tests.auth.smart import bearer
from tests.security.test_compartments import token

H = {"Content-Type": "application/fhir+json"}
VIEW = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()", "type": "id"},
                               {"name": "family", "path": "name.family.first()",
                                "type": "string"},
                               {"name": "active", "path": "active", "type": "boolean"}]},
                   {"forEachOrNull": "identifier",
                    "column": [{"name": "mrn", "path": "value", "type": "string"}]}]}


def _params(view: dict | None = None, **extra) -> dict:
    parameter = [{"name": "viewResource", "resource": view or VIEW}]
    for name, value in extra.items():
        key = "valueInteger" if isinstance(value, int) else "valueString"
        parameter.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": parameter}


@pytest.fixture
def patients(client):
    for i in range(7):
        body = {"resourceType": "Patient", "id": f"pt{i}", "active": i % 2 == 0,
                "name": [{"family": f"F{i}"}]}
        if i == 3:
            body["identifier"] = [{"value": "a"}, {"value": "b"}]
        assert client.put(f"/fhir/Patient/pt{i}", json=body, headers=H).status_code == 201
    # A deleted patient gives no row.
    client.put("/fhir/Patient/gone", json={"resourceType": "Patient", "id": "gone"}, headers=H)
    client.delete("/fhir/Patient/gone")
    return 7


def test_run_json_csv_ndjson_parquet(client, patients):
    r = client.post("/fhir/ViewDefinition/$run", json=_params(), headers=H)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 8  # pt3 has two identifiers, the others one null row each
    assert {"id": "pt3", "family": "F3", "active": False, "mrn": "b"} in rows
    assert {"id": "pt0", "family": "F0", "active": True, "mrn": None} in rows
    assert not any(row["id"] == "gone" for row in rows)

    r = client.post("/fhir/ViewDefinition/$run", json=_params(_format="csv"), headers=H)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == ["id", "family", "active", "mrn"]
    assert {"id": "pt1", "family": "F1", "active": "false", "mrn": ""} in table

    r = client.post("/fhir/ViewDefinition/$run", json=_params(_format="ndjson"), headers=H)
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 8

    pq = pytest.importorskip("pyarrow.parquet")
    r = client.post("/fhir/ViewDefinition/$run", json=_params(_format="parquet"), headers=H)
    assert r.status_code == 200
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 8
    assert str(table.schema.field("active").type) == "bool"


def test_run_parameters(client, patients):
    r = client.post("/fhir/ViewDefinition/$run", json=_params(_limit=3), headers=H)
    assert len(r.json()) == 3
    r = client.post("/fhir/ViewDefinition/$run", json=_params(patient="Patient/pt3"), headers=H)
    assert {row["id"] for row in r.json()} == {"pt3"}
    # Resources given inline instead of the store's.
    body = _params()
    body["parameter"].append({"name": "resource", "resource": {
        "resourceType": "Patient", "id": "inline", "name": [{"family": "X"}]}})
    r = client.post("/fhir/ViewDefinition/$run", json=body, headers=H)
    assert [row["id"] for row in r.json()] == ["inline"]
    # Unknown and unsupported parameters, bad values.
    for extra, where in (({"group": "Group/g"}, "group"), ({"bogus": "x"}, "bogus"),
                         ({"_limit": "0"}, "_limit"), ({"_format": "xlsx"}, "_format")):
        r = client.post("/fhir/ViewDefinition/$run", json=_params(**extra), headers=H)
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["issue"][0]["expression"] == [where]
    r = client.post("/fhir/ViewDefinition/$run", json={"resourceType": "Parameters"},
                    headers=H)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["viewResource"]


@pytest.mark.parametrize(("view", "status", "path", "words"), [
    ({**VIEW, "resource": None}, 422, "resource", "names no resource"),
    ({**VIEW, "resource": "Nope"}, 422, "resource", "not a FHIR R4"),
    ({**VIEW, "select": [{"column": [{"name": "x", "path": "name.soundex()"}]}]}, 422,
     "select[0].column[0].path", "soundex()"),
    ({**VIEW, "select": [{"column": [{"name": "x", "path": "name.family )"}]}]}, 422,
     "select[0].column[0].path", "syntax"),
    ({**VIEW, "select": [{"column": [{"name": "1x", "path": "id"}]}]}, 422,
     "select[0].column[0].name", "identifier"),
    ({**VIEW, "select": [{"column": [{"name": "a", "path": "id"}, {"name": "a", "path": "id"}]}]},
     422, "select", "twice"),
    ({**VIEW, "select": [{"forEach": 1, "column": [{"name": "a", "path": "id"}]}]}, 422,
     "select[0].forEach", "FHIRPath"),
    ({**VIEW, "where": [{"path": "%missing = 1"}]}, 422, "where[0].path", "%missing"),
    ({**VIEW, "constant": [{"name": "c"}]}, 422, "constant[0]", "exactly one"),
    ({**VIEW, "select": [{"unionAll": [{"column": [{"name": "a", "path": "id"}]},
                                       {"column": [{"name": "b", "path": "id"}]}]}]},
     422, "select[0].unionAll[1]", "same columns"),
])
def test_bad_views_are_refused_with_their_path(client, view, status, path, words):
    r = client.post("/fhir/ViewDefinition/$run", json=_params(view), headers=H)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [f"Parameters.parameter('viewResource').resource.{path}"]
    assert words in issue["diagnostics"]


def test_errors_found_in_the_data_are_422(client, patients):
    view = {**VIEW, "select": [{"column": [{"name": "n", "path": "name.family | 'x'"}]}]}
    r = client.post("/fhir/ViewDefinition/$run", json=_params(view), headers=H)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == [
        "Parameters.parameter('viewResource').resource.select[0].column[0].path"]
    view = {**VIEW, "where": [{"path": "name.family"}]}
    r = client.post("/fhir/ViewDefinition/$run", json=_params(view), headers=H)
    assert r.status_code == 422 and "boolean" in r.text


def test_shipped_and_library_views(client):
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                  "v2-0074", "code": "RUS"}]}],
              "code": {"text": "US"}, "issued": "2026-11-03T10:00:00+08:00",
              "performer": [{"reference": "Practitioner/doc1"},
                            {"reference": "Organization/org1"}],
              "conclusionCode": [{"coding": [{"system": "http://snomed.info/sct",
                                              "code": "17621005"}]}]}
    assert client.put("/fhir/DiagnosticReport/r1", json=report, headers=H).status_code == 201
    r = client.get("/fhir/ViewDefinition/us-reports/$run")
    assert r.status_code == 200, r.text
    assert r.json() == [{"id": "r1", "status": "final", "issued": "2026-11-03T10:00:00+08:00",
                         "effective": None, "patient": None, "practitioner": "doc1",
                         "organization": "org1", "request": None, "study": None,
                         "positive": False, "breast": False, "birads": None}]
    view = {**VIEW, "select": [{"column": [{"name": "id", "path": "id"}]}]}
    library = {"resourceType": "Library", "id": "lib1", "status": "active",
               "type": {"coding": [{"code": "logic-library"}]},
               "content": [{"contentType": "application/json",
                            "data": base64.b64encode(json.dumps(view).encode()).decode()}]}
    assert client.put("/fhir/Library/lib1", json=library, headers=H).status_code == 201
    client.put("/fhir/Patient/q", json={"resourceType": "Patient", "id": "q"}, headers=H)
    r = client.get("/fhir/ViewDefinition/lib1/$run")
    assert r.status_code == 200 and r.json() == [{"id": "q"}]
    assert client.get("/fhir/ViewDefinition/nothing/$run").status_code == 404


def test_service_streams_in_batches(core):
    with core.store.write() as writer:
        for i in range(1203):
            writer.create("Patient", {"resourceType": "Patient", "name": [{"family": str(i)}]})
    service = ViewService(core.store, core.search)
    view = compile_view({"resource": "Patient", "select": [{"column": [
        {"name": "f", "path": "name.family"}]}]})
    got = list(service.run(core.server, view))
    assert sorted(int(r["f"]) for r in got) == list(range(1203))
    batches = list(service.resources(core.server, "Patient", RunOptions(), batch=100))
    assert len(batches) == 1203
    assert len(list(service.run(core.server, view, RunOptions(limit=10)))) == 10


def test_a_patient_token_gets_only_its_patients_rows(smart):  # noqa: F811
    """The fixture's world has p1 and p2 with Observations o1 (p1), o2 (p2), o3 (p1)."""
    view = {"resourceType": "ViewDefinition", "resource": "Observation", "select": [
        {"column": [{"name": "id", "path": "id"},
                    {"name": "patient", "path": "subject.getReferenceKey(Patient)"}]}]}
    p1 = token(smart, "patient/*.rs", patient="p1")
    r = smart.http.post("/fhir/ViewDefinition/$run", json=_params(view),
                        headers={**H, **bearer(p1)})
    assert r.status_code == 200, r.text
    assert sorted(row["id"] for row in r.json()) == ["o1", "o3"]
    assert {row["patient"] for row in r.json()} == {"p1"}
    # Asking for the other patient's rows gives none (not an error that tells they exist).
    r = smart.http.post("/fhir/ViewDefinition/$run", json=_params(view, patient="Patient/p2"),
                        headers={**H, **bearer(p1)})
    assert r.status_code == 200 and r.json() == []
    # A user scope sees all; a token without Observation read rights is refused.
    everyone = token(smart, "user/*.rs", role="qc-officer")
    r = smart.http.post("/fhir/ViewDefinition/$run", json=_params(view),
                        headers={**H, **bearer(everyone)})
    assert r.status_code == 200, r.text
    assert sorted(row["id"] for row in r.json()) == ["o1", "o2", "o3"]
    patients_only = token(smart, "patient/Patient.rs", patient="p1")
    r = smart.http.post("/fhir/ViewDefinition/$run", json=_params(view),
                        headers={**H, **bearer(patients_only)})
    assert r.status_code == 403


def test_since_header_reference_and_the_size_bound(client, patients, monkeypatch):
    import sonobridge.core.views.service as service_module

    later = "2999-01-01T00:00:00Z"
    r = client.post("/fhir/ViewDefinition/$run", json=_params(_since=later), headers=H)
    assert r.status_code == 200 and r.json() == []
    r = client.post("/fhir/ViewDefinition/$run", json=_params(_since="2000-01-01"), headers=H)
    assert len(r.json()) == 8
    r = client.post("/fhir/ViewDefinition/$run", json=_params(_format="csv", header="false"),
                    headers=H)
    assert r.status_code == 200 and not r.text.startswith("id,")
    assert len(r.text.splitlines()) == 8
    r = client.get("/fhir/ViewDefinition/$run?viewReference=ViewDefinition/us-encounters")
    assert r.status_code == 200 and r.json() == []
    monkeypatch.setattr(service_module, "RESPONSE_MAX", 200)
    r = client.post("/fhir/ViewDefinition/$run", json=_params(), headers=H)
    assert r.status_code == 413 and "view run" in r.json()["issue"][0]["diagnostics"]
