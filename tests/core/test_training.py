"""Training records (issue 16 item 3): assessments scored by the server on write (and what a
trainee may not do to them), the training report's bilingual table, and a course's recorded
session (an MP4 Binary behind a DocumentReference) served with HTTP Range."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.training import CORRECT, PASS_MARK, PASSED, POINTS, SCORE, TRAINING, report

ME = "Practitioner/tr1"
LIVER = {"system": "http://snomed.info/sct", "code": "10200004"}
KIDNEY = {"system": "http://snomed.info/sct", "code": "64033007"}


def as_role(role: str) -> Caller:
    return Caller(Policy(subject=f"user-{role}", client_id="app",
                         scopes=tuple(resource_scopes("user/*.cruds")), role=role,
                         fhir_user=ME), "http://sono.test/fhir")


def option(coding: dict, correct: bool = False) -> dict:
    out: dict = {"valueCoding": coding}
    if correct:
        out["extension"] = [{"url": CORRECT, "valueBoolean": True}]
    return out


@pytest.fixture
def quiz(core) -> str:
    core.resources.update(core.server, "Practitioner", "tr1", {
        "resourceType": "Practitioner", "id": "tr1", "name": [{"text": "张敏 Zhang Min"}]})
    return core.resources.create(core.server, "Questionnaire", {
        "resourceType": "Questionnaire", "status": "active", "url": "urn:test:quiz",
        "title": "肝脏 Liver quiz", "extension": [{"url": PASS_MARK, "valueDecimal": 60}],
        "item": [
            {"linkId": "q1", "type": "choice", "text": "Which organ?",
             "answerOption": [option(LIVER, True), option(KIDNEY)]},
            {"linkId": "q2", "type": "choice", "repeats": True, "text": "Which two?",
             "extension": [{"url": POINTS, "valueDecimal": 2}],
             "answerOption": [option(LIVER, True), option(KIDNEY, True)]},
            {"linkId": "group", "type": "group", "item": [
                {"linkId": "q3", "type": "boolean", "answerOption": [
                    {"valueString": "yes", "extension": [{"url": CORRECT,
                                                          "valueBoolean": True}]}]}]},
        ]}).stored.id


def answers(q1: list, q2: list, q3: list, status: str = "completed", **extra) -> dict:
    return {"resourceType": "QuestionnaireResponse", "status": status,
            "questionnaire": "urn:test:quiz", "author": {"reference": ME},
            "authored": "2026-11-02",
            "item": [item("q1", [{"valueCoding": c} for c in q1]),
                     item("q2", [{"valueCoding": c} for c in q2]),
                     {"linkId": "group", "item": [item("q3", [{"valueString": v}
                                                              for v in q3])]}],
            **extra}


def item(link_id: str, given: list) -> dict:
    return {"linkId": link_id, **({"answer": given} if given else {})}


def scored(body: dict) -> tuple[float | None, bool | None]:
    ext = {e["url"]: e for e in body.get("extension", [])}
    return (ext[SCORE]["valueDecimal"] if SCORE in ext else None,
            ext[PASSED]["valueBoolean"] if PASSED in ext else None)


@pytest.mark.parametrize(("q1", "q2", "q3", "score", "passed"), [
    ([LIVER], [KIDNEY, LIVER], ["yes"], 100.0, True),
    ([LIVER], [LIVER], ["yes"], 50.0, False),  # q2 half answered: no points (2 of 4)
    ([KIDNEY], [LIVER, KIDNEY], ["yes"], 75.0, True),
    ([LIVER, KIDNEY], [LIVER, KIDNEY], ["no"], 50.0, False),  # an extra option is wrong
    ([], [], [], 0.0, False),
])
def test_the_server_scores_an_assessment(core, quiz, q1, q2, q3, score, passed):
    forged = [{"url": SCORE, "valueDecimal": 100}, {"url": PASSED, "valueBoolean": True}]
    written = core.resources.create(as_role("trainee"), "QuestionnaireResponse",
                                    answers(q1, q2, q3, extension=forged))
    stored = core.resources.read(core.server, "QuestionnaireResponse", written.stored.id)
    body = json.loads(stored.content)
    assert scored(body) == (score, passed)
    record = report(core, core.server, "tr1")
    assert record.assessments[0]["score"] == score
    assert record.assessments[0]["pass_mark"] == 60
    assert record.assessments[0]["passed"] is passed


def test_an_unfinished_attempt_has_no_score(core, quiz):
    written = core.resources.create(as_role("trainee"), "QuestionnaireResponse",
                                    answers([LIVER], [], [], status="in-progress"))
    body = json.loads(core.resources.read(core.server, "QuestionnaireResponse",
                                          written.stored.id).content)
    assert scored(body) == (None, None)


def test_bad_answers_are_refused_with_their_path(core, quiz):
    bad = answers([LIVER], [], [])
    bad["item"][2]["item"][0]["linkId"] = "q9"
    with pytest.raises(CoreError) as info:
        core.resources.create(as_role("trainee"), "QuestionnaireResponse", bad)
    assert info.value.status == 422
    assert info.value.outcome()["issue"][0]["expression"] == [
        "QuestionnaireResponse.item[2].item[0].linkId"]
    huge = answers([LIVER], [], [])
    huge["item"] = [{"linkId": "q1", "answer": [{"valueCoding": LIVER}] * 2500}]
    with pytest.raises(CoreError) as info:
        core.resources.create(as_role("trainee"), "QuestionnaireResponse", huge)
    assert info.value.status == 422 and info.value.code == "too-costly"


def test_a_completed_assessment_is_final_for_the_trainee(core, quiz):
    trainee = as_role("trainee")
    written = core.resources.create(trainee, "QuestionnaireResponse",
                                    answers([KIDNEY], [], []))
    body = json.loads(core.resources.read(core.server, "QuestionnaireResponse",
                                          written.stored.id).content)
    better = {**answers([LIVER], [LIVER, KIDNEY], ["yes"]), "id": body["id"]}
    with pytest.raises(CoreError) as info:
        core.resources.update(trainee, "QuestionnaireResponse", body["id"], better)
    assert info.value.status == 409
    assert info.value.outcome()["issue"][0]["expression"] == ["QuestionnaireResponse.status"]
    trainer = as_role("trainer")
    core.resources.update(trainer, "QuestionnaireResponse", body["id"],
                          {**better, "status": "amended"})
    body = json.loads(core.resources.read(core.server, "QuestionnaireResponse",
                                          body["id"]).content)
    assert scored(body) == (100.0, True)


def test_a_trainee_does_not_score_a_practical_assessment(core):
    core.resources.create(core.server, "Questionnaire", {
        "resourceType": "Questionnaire", "status": "active", "url": "urn:test:practical",
        "extension": [{"url": PASS_MARK, "valueDecimal": 60}],
        "item": [{"linkId": "score", "type": "decimal"}]})
    body = {"resourceType": "QuestionnaireResponse", "status": "completed",
            "questionnaire": "urn:test:practical", "author": {"reference": ME},
            "item": [{"linkId": "score", "answer": [{"valueDecimal": 99}]}]}
    with pytest.raises(CoreError) as info:
        core.resources.create(as_role("trainee"), "QuestionnaireResponse", body)
    assert info.value.status == 422
    assert core.resources.create(as_role("trainer"), "QuestionnaireResponse", body).created


def test_the_report_prints_bilingual_headers(core, settings, quiz):
    core.resources.create(core.server, "Task", {
        "resourceType": "Task", "status": "in-progress", "intent": "order",
        "code": {"coding": [{"system": TRAINING, "code": "assignment"}]},
        "owner": {"reference": ME}, "authoredOn": "2026-10-01"})
    core.resources.create(as_role("trainee"), "QuestionnaireResponse",
                          answers([LIVER], [LIVER, KIDNEY], ["yes"]))
    result = CliRunner().invoke(app, ["training", "report", "--practitioner", "tr1",
                                      "--data-dir", str(settings.data_dir),
                                      "--database-url", settings.database_url],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for header in ("课程 Courses", "考核 Assessments", "得分 score", "及格线 pass mark",
                   "通过 passed", "证书 Certificates", "学分 credits", "张敏 Zhang Min"):
        assert header in result.output, header
    assert "100.0" in result.output


# ------------------------------------------------------------- recorded sessions with Range

MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # 10,252 bytes


@pytest.fixture
def video(client) -> str:
    binary = client.post("/fhir/Binary", json={
        "resourceType": "Binary", "contentType": "video/mp4",
        "data": base64.b64encode(MP4).decode()})
    assert binary.status_code == 201, binary.text
    binary_id = binary.json()["id"]
    doc = client.post("/fhir/DocumentReference", json={
        "resourceType": "DocumentReference", "status": "current",
        "type": {"coding": [{"system": TRAINING, "code": "recorded-session"}]},
        "content": [{"attachment": {"contentType": "video/mp4", "size": len(MP4),
                                    "url": f"Binary/{binary_id}"}}]})
    assert doc.status_code == 201, doc.text
    course = client.post("/fhir/PlanDefinition", json={
        "resourceType": "PlanDefinition", "status": "active", "title": "Liver lesions",
        "relatedArtifact": [{"type": "documentation",
                             "document": {"url": f"DocumentReference/{doc.json()['id']}"}}]})
    assert course.status_code == 201, course.text
    return binary_id


def test_a_recording_is_served_with_range(client, video):
    url = f"/fhir/Binary/{video}"
    whole = client.get(url, headers={"Accept": "video/mp4"})
    assert whole.status_code == 200 and whole.content == MP4
    assert whole.headers["Accept-Ranges"] == "bytes"
    for asked, first, last in (("bytes=0-99", 0, 99), ("bytes=10000-", 10000, len(MP4) - 1),
                               ("bytes=-52", len(MP4) - 52, len(MP4) - 1),
                               ("bytes=100-999999", 100, len(MP4) - 1)):
        part = client.get(url, headers={"Accept": "video/mp4", "Range": asked})
        assert part.status_code == 206, asked
        assert part.headers["Content-Range"] == f"bytes {first}-{last}/{len(MP4)}"
        assert part.content == MP4[first:last + 1]
        assert part.headers["Content-Type"].startswith("video/mp4")
    far = client.get(url, headers={"Accept": "video/mp4", "Range": "bytes=20000-"})
    assert far.status_code == 416
    assert far.headers["Content-Range"] == f"bytes */{len(MP4)}"
    assert far.json()["resourceType"] == "OperationOutcome"
    # ignored (whole content): several ranges, another unit, nonsense, a stale If-Range
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"}, {"Range": "bytes=x-"},
                    {"Range": "bytes=0-1", "If-Range": '"other"'}):
        r = client.get(url, headers={"Accept": "video/mp4", **headers})
        assert r.status_code == 200 and r.content == MP4, headers
    # the FHIR form of the Binary is not ranged
    fhir = client.get(url, headers={"Accept": "application/fhir+json", "Range": "bytes=0-9"})
    assert fhir.status_code == 200 and fhir.json()["resourceType"] == "Binary"


def test_a_trainer_attaches_a_recording_a_trainee_sees_it_once_labelled(core):
    trainer, trainee = as_role("trainer"), as_role("trainee")
    data = base64.b64encode(MP4).decode()
    binary = core.resources.create(trainer, "Binary", {
        "resourceType": "Binary", "contentType": "video/mp4", "data": data}).stored.id
    with pytest.raises(CoreError) as info:
        core.resources.read(trainee, "Binary", binary)
    assert info.value.status == 403  # a recording of a real consultation: identified
    core.resources.update(trainer, "Binary", binary, {
        "resourceType": "Binary", "id": binary, "contentType": "video/mp4", "data": data,
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                         "v3-ObservationValue", "code": "PSEUDED"}]}})
    assert core.resources.read(trainee, "Binary", binary).content
