"""``$evaluate-measure``: the indicators' MeasureReports equal the counts made directly from
the raw data (tests/core/qc_world.py), stratified and subject-listed; bad Measures and periods
are refused with the element named; a caller counts only what it may read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sonobridge.core.measures.definitions import MEASURES
from sonobridge.core.validation import validate
from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures
from tests.auth.smart import bearer
from tests.core.qc_world import stored_world, truth
from tests.security.test_compartments import token

H = {"Content-Type": "application/fhir+json"}
NOV = {"periodStart": "2026-11-01", "periodEnd": "2026-11-30"}


@pytest.fixture
def loaded(core):
    resources = stored_world(core)
    return resources


def _pops(group) -> dict[str, int]:
    return {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}


@pytest.mark.parametrize("measure_id", sorted(MEASURES))
def test_each_indicator_equals_the_independent_count(client, loaded, measure_id):
    expected = truth(loaded)[measure_id]
    r = client.get(f"/fhir/Measure/{measure_id}/$evaluate-measure", params=NOV)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["resourceType"] == "MeasureReport" and report["type"] == "summary"
    validate(report, "MeasureReport")  # a valid R4 MeasureReport
    validate(MEASURES[measure_id], "Measure")
    assert report["measure"] == MEASURES[measure_id]["url"]
    group = report["group"][0]
    pops = _pops(group)
    assert pops["numerator"] == expected["numerator"]
    if measure_id == "us-hr-01":  # ratio: doctors x months (one month)
        assert pops["denominator"] == expected["denominator"]
        score = Decimal(expected["numerator"]) / expected["denominator"]
    else:
        assert pops["denominator"] == expected["denominator"]
        excluded = expected.get("denominator-exclusion", 0)
        assert pops.get("denominator-exclusion", 0) == excluded
        score = Decimal(expected["numerator"]) / (expected["denominator"] - excluded)
    assert abs(Decimal(str(group["measureScore"]["value"])) - score) < Decimal("0.0001")
    assert expected["denominator"] > 0  # the world exercises every indicator
    # Strata add up to the whole.
    for stratifier in group.get("stratifier", []):
        total = sum(_pops(s)["numerator"] for s in stratifier["stratum"])
        assert total == expected["numerator"], stratifier["code"]


def test_strata_by_practitioner_match_the_raw_data(client, loaded):
    r = client.get("/fhir/Measure/us-pr-01/$evaluate-measure", params=NOV)
    strata = {s["value"]["text"]: _pops(s) for st in r.json()["group"][0]["stratifier"]
              if st["code"][0]["text"] == "practitioner" for s in st["stratum"]}
    reports = [x for x in loaded if x["resourceType"] == "DiagnosticReport"
               and x["status"] == "final" and "2026-10-31T16:00:00Z" <= x["issued"]
               < "2026-11-30T16:00:00Z"]
    for doctor in ("d1", "d2", "d3"):
        mine = [x for x in reports if x["performer"][0]["reference"] == f"Practitioner/{doctor}"]
        assert strata[f"Practitioner/{doctor}"]["denominator"] == len(mine)


def test_subject_list_and_subject(client, loaded):
    r = client.post("/fhir/Measure/$evaluate-measure", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "measure", "valueString": "us-tl-01"},
            {"name": "periodStart", "valueDate": "2026-11-01"},
            {"name": "periodEnd", "valueDate": "2026-11-30"},
            {"name": "reportType", "valueCode": "subject-list"}]}, headers=H)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["type"] == "subject-list"
    validate(report, "MeasureReport")
    lists = {c["id"]: c for c in report["contained"]}
    numerator = next(p for p in report["group"][0]["population"]
                     if p["code"]["coding"][0]["code"] == "numerator")
    listed = lists[numerator["subjectResults"]["reference"][1:]]
    assert len(listed["entry"]) == numerator["count"]
    assert all(e["item"]["reference"].startswith("ServiceRequest/") for e in listed["entry"])
    # One patient's records only.
    mine = [x for x in loaded if x["resourceType"] == "DiagnosticReport"
            and x["subject"]["reference"] == "Patient/p1" and x["status"] == "final"
            and "2026-10-31T16:00:00Z" <= x["issued"] < "2026-11-30T16:00:00Z"]
    r = client.get("/fhir/Measure/us-pr-01/$evaluate-measure",
                   params={**NOV, "subject": "Patient/p1"})
    assert _pops(r.json()["group"][0])["denominator"] == len(mine)
    assert r.json()["subject"] == {"reference": "Patient/p1"}


@pytest.mark.parametrize(("params", "status", "where"), [
    ({"periodStart": "2026-11-30", "periodEnd": "2026-11-01"}, 400, "periodEnd"),
    ({"periodStart": "2026-11-01"}, 400, "periodEnd"),
    ({"periodEnd": "2026-11-01"}, 400, "periodStart"),
    ({**NOV, "reportType": "individual"}, 400, "reportType"),
    ({**NOV, "subject": "Location/x"}, 400, "subject"),
    ({**NOV, "bogus": "1"}, 400, "bogus"),
    ({"periodStart": "2026-13-01", "periodEnd": "2026-12-01"}, 400, "periodStart"),
    ({"periodStart": "2000-01-01", "periodEnd": "2026-12-01"}, 413, "periodEnd"),
])
def test_bad_parameters(client, params, status, where):
    r = client.get("/fhir/Measure/us-cv-01/$evaluate-measure", params=params)
    assert r.status_code == status, r.text
    assert r.json()["issue"][0]["expression"] == [where]


def test_a_measure_with_an_unknown_population_expression_is_422(client):
    measure = {**MEASURES["us-cv-01"], "id": "mine", "url": "http://example.org/Measure/mine"}
    measure["group"] = [{**measure["group"][0], "population": [
        dict(p) for p in measure["group"][0]["population"]]}]
    measure["group"][0]["population"][2] = {
        **measure["group"][0]["population"][2],
        "criteria": {**measure["group"][0]["population"][2]["criteria"],
                     "expression": "us-cv-01.within-an-hour"}}
    assert client.put("/fhir/Measure/mine", json=measure, headers=H).status_code == 201
    r = client.get("/fhir/Measure/mine/$evaluate-measure", params=NOV)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert "us-cv-01.within-an-hour" in issue["diagnostics"]
    assert issue["expression"] == ["Measure.group[0].population[2].criteria.expression"]
    # Other ways a Measure cannot be evaluated.
    groupless = {k: v for k, v in measure.items() if k != "group"}
    for body, path in (({**measure, "scoring": {"coding": [{"code": "cohort"}]}},
                        "Measure.scoring"), (groupless, "Measure.group")):
        assert client.put("/fhir/Measure/mine", json=body, headers=H).status_code == 200
        r = client.get("/fhir/Measure/mine/$evaluate-measure", params=NOV)
        assert r.status_code == 422 and r.json()["issue"][0]["expression"] == [path]
    assert client.get("/fhir/Measure/none/$evaluate-measure", params=NOV).status_code == 404


def test_a_stored_measure_over_the_same_filters_evaluates(client, loaded):
    measure = {**MEASURES["us-pr-01"], "id": "site-pr", "url": "http://example.org/site-pr"}
    assert client.put("/fhir/Measure/site-pr", json=measure, headers=H).status_code == 201
    r = client.get("/fhir/Measure/$evaluate-measure",
                   params={**NOV, "measure": "http://example.org/site-pr"})
    assert r.status_code == 200 and r.json()["measure"] == "http://example.org/site-pr"
    assert _pops(r.json()["group"][0])["numerator"] == truth(loaded)["us-pr-01"]["numerator"]


def test_a_patient_token_counts_only_its_patient(smart):  # noqa: F811
    """p1's token: the reports of p2 are not counted (the fixture has r1 of p1)."""
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "US"},
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                  "v2-0074", "code": "RUS"}]}],
              "issued": "2026-11-05T10:00:00+08:00"}
    admin = token(smart, "system/*.cruds")
    for rid, patient in (("x1", "p1"), ("x2", "p2"), ("x3", "p2")):
        r = smart.http.put(f"/fhir/DiagnosticReport/{rid}", json={
            **report, "id": rid, "subject": {"reference": f"Patient/{patient}"}},
            headers={**H, **bearer(admin)})
        assert r.status_code in (200, 201), r.text
    counts = {}
    for name, tok in (("all", admin), ("p1", token(smart, "patient/*.rs", patient="p1"))):
        r = smart.http.get("/fhir/Measure/us-pr-01/$evaluate-measure", params=NOV,
                           headers=bearer(tok))
        assert r.status_code == 200, r.text
        counts[name] = _pops(r.json()["group"][0])["denominator"]
    assert counts == {"all": 3, "p1": 1}
