"""Training records: a trainee's courses, assessments (score against the pass mark), live
sessions attended and certificates with CME credits, from the FHIR resources that hold them
(core/training.py), and ``sonobridge training report``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.core.errors import CoreError
from sonobridge.core.training import CME_CREDITS, PASS_MARK, TRAINING, report


def create(core, body: dict) -> str:
    return core.resources.create(core.server, body["resourceType"], body).stored.id


@pytest.fixture
def trainee(core) -> str:
    pid = create(core, {"resourceType": "Practitioner", "name": [{"family": "Zhang",
                                                                  "given": ["Min"]}],
                        "qualification": [
                            {"code": {"text": "Abdominal ultrasound basic"},
                             "period": {"start": "2026-03-01", "end": "2029-03-01"},
                             "issuer": {"display": "City Ultrasound QC Centre"},
                             "extension": [{"url": CME_CREDITS, "valueDecimal": 4}]},
                            {"code": {"coding": [{"code": "OB-1", "display": "Obstetric"}]},
                             "extension": [{"url": CME_CREDITS, "valueDecimal": 2.5}]}]})
    other = create(core, {"resourceType": "Practitioner", "name": [{"family": "Other"}]})
    course = create(core, {"resourceType": "PlanDefinition", "status": "active",
                           "title": "Liver lesions",
                           "type": {"coding": [{"system": TRAINING, "code": "course"}]}})
    for owner, code in ((pid, "assignment"), (pid, "something-else"), (other, "assignment")):
        create(core, {"resourceType": "Task", "status": "in-progress", "intent": "order",
                      "code": {"coding": [{"system": TRAINING, "code": code}]},
                      "focus": {"reference": f"PlanDefinition/{course}"},
                      "owner": {"reference": f"Practitioner/{owner}"},
                      "authoredOn": "2026-10-01"})
    questionnaire = create(core, {"resourceType": "Questionnaire", "status": "active",
                                  "url": "urn:test:liver-quiz", "title": "Liver quiz",
                                  "extension": [{"url": PASS_MARK, "valueDecimal": 60}],
                                  "item": [{"linkId": "score", "type": "decimal"}]})
    assert questionnaire
    for score in (72, 55):
        create(core, {"resourceType": "QuestionnaireResponse", "status": "completed",
                      "questionnaire": "urn:test:liver-quiz", "authored": "2026-11-02",
                      "author": {"reference": f"Practitioner/{pid}"},
                      "item": [{"linkId": "score", "answer": [{"valueDecimal": score}]}]})
    for klass in ("VR", "AMB"):
        create(core, {"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": klass},
                      "period": {"start": "2026-11-05T14:00:00+08:00"},
                      "participant": [{"individual": {"reference": f"Practitioner/{pid}"}}]})
    return pid


def test_report(core, trainee):
    record = report(core, core.server, trainee)
    assert record.name == "Min Zhang"
    assert record.courses == [{"course": "Liver lesions", "status": "in-progress",
                               "assigned": "2026-10-01"}]
    assert sorted((a["score"], a["passed"]) for a in record.assessments) == [
        (55, False), (72, True)]
    assert all(a["assessment"] == "Liver quiz" and a["pass_mark"] == 60
               for a in record.assessments)
    assert len(record.sessions) == 1 and record.sessions[0]["start"].startswith("2026-11-05")
    assert [c["certificate"] for c in record.certificates] == [
        "Abdominal ultrasound basic", "Obstetric"]
    assert str(record.credits) == "6.5"
    with pytest.raises(CoreError) as info:
        report(core, core.server, "nobody")
    assert info.value.status == 404


def test_cli(core, settings, trainee):
    options = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    result = CliRunner().invoke(app, ["training", "report", "--practitioner", trainee,
                                      "--json", *options])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["credits"] == "6.5" and len(data["assessments"]) == 2
    result = CliRunner().invoke(app, ["training", "report", "--practitioner", trainee,
                                      *options])
    assert result.exit_code == 0 and "Liver lesions" in result.stdout
    assert "CME credits: 6.5" in result.stdout
    result = CliRunner().invoke(app, ["training", "report", "--practitioner", "nobody",
                                      *options])
    assert result.exit_code == 1 and "404" in result.output
