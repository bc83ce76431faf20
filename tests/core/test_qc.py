"""QC reviews: answers checked against their Questionnaire (422 with the item's path), the
total score set by the server; the monthly sample reproducible and idempotent; the
``qc report`` and ``view run`` commands on a generated month."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.config import Settings
from sonobridge.core.measures.definitions import MEASURES
from sonobridge.core.operations import OperationCall
from sonobridge.core.qc import IMAGE_QC, REPORT_QC, SCORE_URL, draw_sample, month_studies
from sonobridge.core.resources import SearchSpec
from sonobridge.core.services import open_core
from tests.core.qc_world import stored_world, truth

H = {"Content-Type": "application/fhir+json"}


def _review(items: dict[str, bool], status: str = "completed",
            subject: str = "DiagnosticReport/r1") -> dict:
    return {"resourceType": "QuestionnaireResponse", "status": status,
            "questionnaire": REPORT_QC["url"], "subject": {"reference": subject},
            "authored": "2026-11-05T10:00:00+08:00",
            "item": [{"linkId": k, "answer": [{"valueBoolean": v}]} for k, v in items.items()]}


ALL_YES = {"required-items": True, "terminology": True, "conclusion-matches": True,
           "timeliness": True}


def test_the_server_scores_a_review(client):
    # Someone types a score: the server replaces it with the points of the answers.
    body = _review({**ALL_YES, "timeliness": False})
    body["extension"] = [{"url": SCORE_URL, "valueDecimal": 100}]
    r = client.post("/fhir/QuestionnaireResponse", json=body, headers=H)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert [e for e in stored["extension"] if e["url"] == SCORE_URL] == [
        {"url": SCORE_URL, "valueDecimal": 80}]
    # In progress: criteria may be missing; the score counts what is answered.
    r = client.post("/fhir/QuestionnaireResponse", json=_review(
        {"terminology": True}, status="in-progress"), headers=H)
    assert r.status_code == 201
    assert r.json()["extension"][0]["valueDecimal"] == 20
    # Other questionnaires are not touched.
    other = {**_review({"x": True}), "questionnaire": "http://example.org/Questionnaire/q"}
    r = client.post("/fhir/QuestionnaireResponse", json=other, headers=H)
    assert r.status_code == 201 and "extension" not in r.json()


@pytest.mark.parametrize(("body", "path", "words"), [
    (_review({**ALL_YES, "bogus": True}), "QuestionnaireResponse.item[4].linkId", "bogus"),
    (_review({"terminology": True}), "QuestionnaireResponse.item", "missing"),
    (_review(ALL_YES, subject="ImagingStudy/s1"), "QuestionnaireResponse.subject", "subject"),
    ({**_review(ALL_YES), "item": [{"linkId": "terminology",
                                    "answer": [{"valueString": "yes"}]}]},
     "QuestionnaireResponse.item[0].answer", "yes/no"),
    ({**_review(ALL_YES), "item": [{"linkId": "terminology", "answer": [
        {"valueBoolean": True}]}] * 2}, "QuestionnaireResponse.item[1].linkId", "twice"),
    ({**_review({"body-marker": True}, status="in-progress"),
      "questionnaire": IMAGE_QC["url"] + "|1"},
     "QuestionnaireResponse.subject", "ImagingStudy"),
])
def test_a_review_that_does_not_match_its_questionnaire_is_422(client, body, path, words):
    r = client.post("/fhir/QuestionnaireResponse", json=body, headers=H)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [path] and words in issue["diagnostics"]


def _studies(core, n: int) -> None:
    start = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01T00:00+08:00
    with core.store.write() as writer:
        for i in range(n):
            when = start + timedelta(hours=12 * i - 24)  # the first two are in October
            writer.create("ImagingStudy", {
                "resourceType": "ImagingStudy", "status": "available",
                "subject": {"reference": "Patient/p1"},
                "started": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                              "code": "US"}]}, f"s{i:03d}")


def test_the_sample_is_reproducible_and_idempotent(core):
    _studies(core, 42)
    studies = month_studies(core, core.server, "2026-11")
    assert len(studies) == 40 and "s000" not in studies and "s002" in studies
    first = draw_sample(core, core.server, "2026-11", 0.1, "2026-11")
    assert first.population == 40 and len(first.sampled) == 4 and first.created == 4
    again = draw_sample(core, core.server, "2026-11", 0.1, "2026-11")
    assert again.sampled == first.sampled and again.created == 0
    other = draw_sample(core, core.server, "2026-11", 0.1, "another seed")
    assert len(other.sampled) == 4
    tasks = core.resources.search(core.server, SearchSpec("Task", [("_summary", "count")]))
    assert tasks.bundle["total"] == 8  # two draws of 4, the repeat made none
    assert core.resources.exists("Questionnaire", "us-image-qc")
    assert draw_sample(core, core.server, "2026-12", 0.05, "x").sampled == []


@pytest.fixture
def data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite",
                        audit=False)
    core = open_core(settings)
    resources = stored_world(core)
    _studies(core, 30)
    core.close()
    return tmp_path, resources


def test_qc_commands(data_dir, monkeypatch):
    path, resources = data_dir
    monkeypatch.setenv("SONOBRIDGE_DATA_DIR", str(path))
    monkeypatch.setenv("SONOBRIDGE_DATABASE_URL", f"sqlite:///{path}/db.sqlite")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    out = path / "reports"
    result = runner.invoke(app, ["qc", "report", "--month", "2026-11", "--by", "practitioner",
                                 "--out", str(out), "--save"])
    assert result.exit_code == 0, result.output
    assert "指标 Indicator" in result.output and "分子 Numerator" in result.output
    expected = truth(resources)
    line = next(x for x in result.output.splitlines() if "US-TL-01" in x)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    tl = expected["us-tl-01"]
    assert cells[2] == str(tl["numerator"])
    assert cells[3] == str(tl["denominator"] - tl["denominator-exclusion"])
    report = json.loads((out / "MeasureReport-us-cv-01-2026-11.json").read_text())
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][0]["population"]}
    assert counts["numerator"] == expected["us-cv-01"]["numerator"]
    assert "Practitioner/d1" in result.output
    core = open_core(Settings(data_dir=path, database_url=f"sqlite:///{path}/db.sqlite",
                              audit=False))
    try:
        assert core.resources.exists("Measure", "us-tl-01")
        saved = core.resources.search(core.server, SearchSpec("MeasureReport", [
            ("_summary", "count")]))
        assert saved.bundle["total"] == len(MEASURES)
    finally:
        core.close()
    assert runner.invoke(app, ["qc", "report", "--month", "2026-13"]).exit_code == 2
    # a year: the same MeasureReports as $evaluate-measure over 2026, indicator by indicator
    year_out = path / "year"
    result = runner.invoke(app, ["qc", "report", "--year", "2026", "--out", str(year_out)])
    assert result.exit_code == 0, result.output
    assert "Ultrasound QC indicators 2026" in result.output
    core = open_core(Settings(data_dir=path, database_url=f"sqlite:///{path}/db.sqlite",
                              audit=False))
    try:
        for measure_id in MEASURES:
            answered = core.operations.invoke(OperationCall(
                core.server, "evaluate-measure", "instance", "GET", "Measure", measure_id,
                query=[("periodStart", "2026-01-01"), ("periodEnd", "2026-12-31")]))
            assert answered.status == 200
            saved = json.loads((year_out / f"MeasureReport-{measure_id}-2026.json").read_text())
            assert saved["period"] == answered.body["period"]
            assert saved["group"] == json.loads(json.dumps(answered.body["group"], default=str))
    finally:
        core.close()
    for wrong in (["--year", "26"], ["--year", "2026", "--month", "2026-11"], []):
        assert runner.invoke(app, ["qc", "report", *wrong]).exit_code == 2, wrong

    result = runner.invoke(app, ["qc", "sample", "--month", "2026-11", "--rate", "0.1"])
    assert result.exit_code == 0, result.output
    sampled = [x for x in result.output.splitlines() if x.startswith("s0")]
    assert len(sampled) == 3  # 28 of the 30 studies are in November
    again = runner.invoke(app, ["qc", "sample", "--month", "2026-11", "--rate", "0.1"])
    assert [x for x in again.output.splitlines() if x.startswith("s0")] == sampled

    result = runner.invoke(app, ["view", "run", "us-reports", "--format", "csv",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == sum(r["resourceType"] == "DiagnosticReport" for r in resources)
    result = runner.invoke(app, ["view", "run", "us-reports", "--format", "ndjson",
                                 "--no-progress", "--search", "issued=ge2026-11-15",
                                 "--search", "issued=lt2026-11-20"])
    assert result.exit_code == 0, result.output
    narrowed = [json.loads(line) for line in result.stdout.splitlines()]
    assert narrowed and all("2026-11-14" <= r["issued"] < "2026-11-21" for r in narrowed)
    assert len(narrowed) == sum(r["resourceType"] == "DiagnosticReport" and
                                "2026-11-15" <= r["issued"] < "2026-11-20" for r in resources)
    result = runner.invoke(app, ["view", "run", "us-reports", "--search", "bogus"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["view", "run", "us-reports", "--format", "parquet"])
    assert result.exit_code == 2

    # The analyst's way: Parquet into DuckDB, US-CV-01 recomputed in SQL, as counted directly.
    duckdb = pytest.importorskip("duckdb")
    for view_id in ("us-reports", "us-critical-values"):
        result = runner.invoke(app, ["view", "run", view_id, "--format", "parquet", "--out",
                                     str(path / f"{view_id}.parquet"), "--no-progress"])
        assert result.exit_code == 0, result.output
    ((num, den),) = duckdb.sql(f"""
        select count(*) filter (where cast(c.sent as timestamptz)
                                      <= cast(r.issued as timestamptz) + interval 10 minute),
               count(*)
        from '{path}/us-critical-values.parquet' c
        join '{path}/us-reports.parquet' r on c.report = r.id
        where not c.follow_up
          and cast(r.issued as timestamptz) >= timestamptz '2026-11-01 00:00:00+08'
          and cast(r.issued as timestamptz) < timestamptz '2026-12-01 00:00:00+08'
    """).fetchall()
    assert (num, den) == (expected["us-cv-01"]["numerator"], expected["us-cv-01"]["denominator"])
    bad = path / "bad.json"
    bad.write_text(json.dumps({"resource": "Patient", "select": [
        {"column": [{"name": "x", "path": "name.soundex()"}]}]}))
    result = runner.invoke(app, ["view", "run", str(bad)])
    assert result.exit_code == 2 and "soundex" in result.output


def test_a_sampled_study_with_a_final_report_gets_a_report_review_task(core):
    _studies(core, 20)
    with core.store.write() as writer:
        for i in range(0, 20, 2):  # even studies have a report; s004's is preliminary
            writer.create("DiagnosticReport", {
                "resourceType": "DiagnosticReport", "status": "preliminary" if i == 4 else "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                    "v2-0074", "code": "RUS"}]}],
                "code": {"text": "US"}, "subject": {"reference": "Patient/p1"},
                "imagingStudy": [{"reference": f"ImagingStudy/s{i:03d}"}],
                "issued": "2026-11-20T10:00:00+08:00"}, f"r{i:03d}")
    sample = draw_sample(core, core.server, "2026-11", 1.0, "all")
    assert len(sample.sampled) == 18  # s000 and s001 started in October
    reported = [s for s in sample.sampled if int(s[1:]) % 2 == 0 and s != "s004"]
    assert sample.created == 18 + len(reported)
    found = core.resources.search(core.server, SearchSpec("Task", [
        ("code", "http://sonobridge.org/fhir/CodeSystem/qc-task|report-qc"), ("_count", "50")]))
    tasks = [e["resource"] for e in orjson.loads(orjson.dumps(found.bundle))["entry"]]
    focus = sorted(t["focus"]["reference"] for t in tasks)
    assert focus == sorted(f"DiagnosticReport/r{s[1:]}" for s in reported)
    assert draw_sample(core, core.server, "2026-11", 1.0, "all").created == 0
