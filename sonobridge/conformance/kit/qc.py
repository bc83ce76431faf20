"""The QC suite: SQL on FHIR ``$run`` and the indicators' ``$evaluate-measure``.

Against a FHIR base (``--target``): a ViewDefinition run over resources given inline (nothing
written) answers the spec's rows; a view calling a function the server does not implement is
refused with 422 naming where; the positive-rate indicator over a month of the kit's own
reports (a tagged patient with three final ultrasound reports in January 2099, one with an
abnormal coded conclusion; ``subject`` confines the count to that patient) answers a
MeasureReport of 1 / 3; an inverted period is 400. Everything written is deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, TAG_SYSTEM, base
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import Check, Context, Group, Requirement, Suite
from sonobridge.conformance.kit.model import TestDef as T

SOF = "https://build.fhir.org/ig/FHIR/sql-on-fhir-v2"
MEASURE = "https://hl7.org/fhir/R4/measure-operation-evaluate-measure.html"
VIEW = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()", "type": "id"}]},
                   {"forEach": "name", "column": [{"name": "family", "path": "family",
                                                   "type": "string"}]}]}
INLINE = [{"resourceType": "Patient", "id": "k1", "name": [{"family": "A"}, {"family": "B"}]},
          {"resourceType": "Patient", "id": "k2"}]
PERIOD = {"periodStart": "2099-01-01", "periodEnd": "2099-01-31"}


def _run(check: Check, view: dict[str, Any]) -> httpx.Response:
    parameters: list[dict[str, Any]] = [{"name": "viewResource", "resource": view}]
    parameters += [{"name": "resource", "resource": r} for r in INLINE]
    return check.http.post(f"{base(check.ctx)}/ViewDefinition/$run", content=json.dumps(
        {"resourceType": "Parameters", "parameter": parameters}), headers=HEADERS)


def view_rows(check: Check) -> None:
    response = _run(check, VIEW)
    expect_status(response, 200, what="ViewDefinition/$run")
    rows = json_body(response, "the rows")
    expected = [{"id": "k1", "family": "A"}, {"id": "k1", "family": "B"}]
    check.expect(isinstance(rows, list) and sorted(rows, key=json.dumps) == expected,
                 f"rows {expected}; got {rows}")


def view_refused(check: Check) -> None:
    bad = {**VIEW, "select": [{"column": [{"name": "x", "path": "name.soundex()"}]}]}
    response = _run(check, bad)
    expect_status(response, 422, what="a view calling an unsupported function")
    issue = json_body(response, "the OperationOutcome").get("issue", [{}])[0]
    check.expect(bool(issue.get("expression")), "the issue names where (expression)")
    check.expect("soundex" in str(issue.get("diagnostics", "")),
                 "the diagnostics name the function")


def _create(check: Check, resource: dict[str, Any]) -> str:
    tag = check.ctx.state.setdefault("qc_tag", "qc-" + uuid.uuid4().hex[:16])
    response = check.http.post(f"{base(check.ctx)}/{resource['resourceType']}", content=json.dumps(
        {**resource, "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]}},
        ensure_ascii=False), headers=HEADERS)
    expect_status(response, 201, what=f"creating the kit's {resource['resourceType']}")
    res_id = str(json_body(response).get("id"))
    check.ctx.state.setdefault("qc_created", []).append(f"{resource['resourceType']}/{res_id}")
    return res_id


def positive_rate(check: Check) -> None:
    patient = _create(check, {"resourceType": "Patient", "name": [{"text": "质控测试"}]})
    for i, code in enumerate(("17621005", "17621005", "300331000")):
        _create(check, {
            "resourceType": "DiagnosticReport", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v2-0074", "code": "RUS"}]}],
            "code": {"text": "US"}, "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": f"2099-01-0{i + 2}T09:00:00+08:00",
            "issued": f"2099-01-0{i + 2}T10:00:00+08:00",
            "conclusionCode": [{"coding": [{"system": "http://snomed.info/sct",
                                            "code": code}]}]})
    response = check.http.get(f"{base(check.ctx)}/Measure/us-pr-01/$evaluate-measure",
                              params={**PERIOD, "subject": f"Patient/{patient}"},
                              headers=HEADERS)
    expect_status(response, 200, what="$evaluate-measure of US-PR-01")
    report = json_body(response, "the MeasureReport")
    check.expect(report.get("resourceType") == "MeasureReport", "a MeasureReport")
    group = (report.get("group") or [{}])[0]
    counts = {p["code"]["coding"][0]["code"]: p.get("count")
              for p in group.get("population", [])}
    check.expect(counts.get("numerator") == 1 and counts.get("denominator") == 3,
                 f"numerator 1, denominator 3; got {counts}")


def inverted(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/Measure/us-pr-01/$evaluate-measure",
                              params={"periodStart": "2099-02-01",
                                      "periodEnd": "2099-01-01"}, headers=HEADERS)
    expect_status(response, 400, what="an inverted period")


def cleanup(ctx: Context) -> None:
    for ref in reversed(ctx.state.get("qc_created", [])):
        with contextlib.suppress(httpx.HTTPError):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("qc-view-01", "$run gives the view's rows", "SQL on FHIR v2 $run: forEach over "
       "name, one row per element; resources given inline.", f"{SOF}/OperationDefinition-"
       "ViewDefinitionRun.html", view_rows),
    _t("qc-view-02", "Unsupported FHIRPath is refused", "A view calling a function the "
       "server does not implement: 422, the function and the element named.",
       f"{SOF}/StructureDefinition-ViewDefinition.html", view_refused),
    _t("qc-measure-01", "Positive rate of the kit's month", "US-PR-01 over January 2099 for "
       "the kit's patient: numerator 1, denominator 3.", MEASURE, positive_rate),
    _t("qc-measure-02", "An inverted period is 400", "periodEnd before periodStart.",
       MEASURE, inverted),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("qc", "Quality control: views and indicators", TESTS, teardown=cleanup)]


SUITE = Suite("qc", "Quality control (SQL on FHIR, indicators)", groups)
