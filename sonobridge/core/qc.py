"""QC reviews (质控): the two review Questionnaires, scored answers, and the monthly sample.

A reviewer answers the image QC (存图合格) or report QC (报告书写合格) Questionnaire with a
QuestionnaireResponse whose ``subject`` is the ImagingStudy or the DiagnosticReport reviewed.
Every criterion is a yes/no item worth a number of points; on write the server checks the
response against its Questionnaire (known items, one boolean answer each, every criterion
answered once the review is completed, the right kind of subject: 422 with the item's path
otherwise) and sets the total score extension itself, so a score is never typed in by hand and
the report qualified rate (US-RQ-01) counts the same points the form shows.

``draw_sample`` picks a reproducible random share of a month's ultrasound studies (seeded by
the month unless told otherwise: the same command draws the same studies) and makes, per
sampled study, an image QC Task and, when the study has a final report, a report QC Task,
idempotently (a Task identifier per month and study or report).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sonobridge import jsonio
from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceWriting
from sonobridge.core.measures.evaluate import period_of
from sonobridge.core.measures.indicators import DAY, FINAL, instant, window
from sonobridge.core.policy import Caller
from sonobridge.core.views.definition import compile_view
from sonobridge.core.views.service import RunOptions, ViewService
from sonobridge.core.views.shipped import BASE, EXAMS, REPORTS

if TYPE_CHECKING:
    from sonobridge.core.services import Core

SCORE_URL = f"{BASE}/StructureDefinition/qc-total-score"
TASK_CODES = f"{BASE}/CodeSystem/qc-task"
SAMPLE_SYSTEM = f"{BASE}/qc-sample"

# linkId -> (Chinese text, English text, points)
IMAGE_ITEMS: dict[str, tuple[str, str, int]] = {
    "standard-views": ("标准切面齐全", "Standard views present", 30),
    "body-marker": ("体标标注正确", "Body marker present and correct", 15),
    "annotations": ("测量与注释规范", "Measurements and annotations as required", 15),
    "depth-gain": ("深度、增益适当", "Depth and gain acceptable", 20),
    "cine-length": ("动态图像时长达标", "Cine loops long enough", 20),
}
REPORT_ITEMS: dict[str, tuple[str, str, int]] = {
    "required-items": ("必填项目完整", "Required items complete", 25),
    "terminology": ("术语规范", "Standard terminology", 20),
    "conclusion-matches": ("超声提示与所见相符", "Conclusion matches the findings", 35),
    "timeliness": ("报告及时", "Report issued on time", 20),
}
COMMENT = "comment"


def _questionnaire(qid: str, title: str, subject: str, items: dict[str, tuple[str, str, int]]
                   ) -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire", "id": qid, "url": f"{BASE}/Questionnaire/{qid}",
        "version": "1", "name": qid.replace("-", "_"), "title": title, "status": "active",
        "subjectType": [subject], "language": "zh-CN",
        "item": [{"linkId": link, "text": f"{zh} ({points}分)", "type": "boolean",
                  "required": True,
                  "_text": {"extension": [{
                      "url": "http://hl7.org/fhir/StructureDefinition/translation",
                      "extension": [{"url": "lang", "valueCode": "en"},
                                    {"url": "content",
                                     "valueString": f"{en} ({points} points)"}]}]}}
                 for link, (zh, en, points) in items.items()]
        + [{"linkId": COMMENT, "text": "评语 Comment", "type": "text", "required": False}]}


IMAGE_QC = _questionnaire("us-image-qc", "超声存图质控 Ultrasound image QC", "ImagingStudy",
                          IMAGE_ITEMS)
REPORT_QC = _questionnaire("us-report-qc", "超声报告质控 Ultrasound report QC",
                           "DiagnosticReport", REPORT_ITEMS)
QUESTIONNAIRES = {IMAGE_QC["url"]: (IMAGE_QC, IMAGE_ITEMS, "ImagingStudy"),
                  REPORT_QC["url"]: (REPORT_QC, REPORT_ITEMS, "DiagnosticReport")}


def _unprocessable(message: str, path: str) -> CoreError:
    return CoreError(422, "processing", message, expression=[path])


def check_response(body: dict[str, Any]) -> Decimal | None:
    """The total score of a QC review (``None`` for other QuestionnaireResponses); 422 when
    it does not match its Questionnaire."""
    canonical = str(body.get("questionnaire", "")).split("|")[0]
    if canonical not in QUESTIONNAIRES:
        return None
    _, items, subject_type = QUESTIONNAIRES[canonical]
    subject = (body.get("subject") or {}).get("reference", "")
    if not str(subject).split("/_history")[0].rsplit("/", 2)[-2:-1] == [subject_type]:
        raise _unprocessable(f"a {canonical.rsplit('/', 1)[-1]} review's subject is the "
                             f"{subject_type} reviewed", "QuestionnaireResponse.subject")
    score = 0
    seen: set[str] = set()
    for i, item in enumerate(body.get("item", [])):
        path = f"QuestionnaireResponse.item[{i}]"
        link = item.get("linkId")
        if link == COMMENT:
            continue
        if link not in items:
            raise _unprocessable(f"item {link!r} is not in the Questionnaire {canonical}",
                                 f"{path}.linkId")
        if link in seen:
            raise _unprocessable(f"item {link!r} is answered twice", f"{path}.linkId")
        seen.add(link)
        answers = item.get("answer", [])
        if len(answers) != 1 or not isinstance(answers[0].get("valueBoolean"), bool) or \
                len(answers[0]) != 1:
            raise _unprocessable(f"item {link!r} takes one yes/no answer (valueBoolean)",
                                 f"{path}.answer")
        if answers[0]["valueBoolean"]:
            score += items[link][2]
    if body.get("status") == "completed":
        missing = [link for link in items if link not in seen]
        if missing:
            raise _unprocessable(f"a completed review answers every criterion; missing "
                                 f"{', '.join(missing)}", "QuestionnaireResponse.item")
    return Decimal(score)


def _on_writing(event: ResourceWriting) -> None:
    if event.res_type != "QuestionnaireResponse":
        return
    score = check_response(event.resource)
    if score is None:
        return
    kept = [e for e in event.resource.get("extension", []) if e.get("url") != SCORE_URL]
    event.resource["extension"] = [*kept, {"url": SCORE_URL, "valueDecimal": score}]


@dataclass
class Sample:
    population: int
    sampled: list[str]
    created: int


def month_studies(core: Core, caller: Caller, month: str) -> list[str]:
    """Ids of the ultrasound studies started in the month (site zone), sorted."""
    period = period_of(month, month, core.settings.hl7_time_zone)
    service = ViewService(core.store, core.search)
    return sorted(row["id"] for row in service.run(caller, compile_view(EXAMS))
                  if period.holds(instant(row.get("started"))))


def _reports_of(core: Core, caller: Caller, month: str, studies: list[str]) -> dict[str, str]:
    """study id -> the id of its first final report (issued from the month's start to a month
    after its end: the report of a sampled study is reviewed with it)."""
    if not studies or not (caller.policy.unrestricted or
                           caller.policy.grants("DiagnosticReport", "r")):
        return {}
    period = period_of(month, month, core.settings.hl7_time_zone)
    wanted = set(studies)
    query = window("issued", period, after=31 * DAY)
    found: dict[str, tuple[int, str]] = {}
    for row in ViewService(core.store, core.search).run(
            caller, compile_view(REPORTS), RunOptions(query=query)):
        when = instant(row.get("issued"))
        study = row.get("study")
        if study in wanted and when is not None and row.get("status") in FINAL and \
                (study not in found or when < found[study][0]):
            found[str(study)] = (when, str(row["id"]))
    return {study: report for study, (_, report) in found.items()}


def _task(month: str, kind: str, focus: str, subject: Any, questionnaire: str,
          display: str) -> tuple[dict[str, Any], str]:
    identifier = f"{month}:{focus.replace('/', ':')}" if kind == "report-qc" else \
        f"{month}:{focus.split('/', 1)[1]}"
    task: dict[str, Any] = {
        "resourceType": "Task", "status": "requested", "intent": "order",
        "identifier": [{"system": SAMPLE_SYSTEM, "value": identifier}],
        "code": {"coding": [{"system": TASK_CODES, "code": kind, "display": display}]},
        "description": f"{month} 质控抽查 QC sample",
        "focus": {"reference": focus},
        "input": [{"type": {"text": "questionnaire"}, "valueCanonical": questionnaire}]}
    if subject:
        task["for"] = subject
    return task, identifier


def draw_sample(core: Core, caller: Caller, month: str, rate: float, seed: str) -> Sample:
    """Sample the month's studies; one image QC Task per sampled study and, when the study
    has a final report, one report QC Task for that report."""
    if not 0 < rate <= 1:
        raise CoreError(400, "invalid", "the rate is a share in (0, 1]", expression=["rate"])
    for questionnaire, _, _ in QUESTIONNAIRES.values():
        if not core.resources.exists("Questionnaire", questionnaire["id"]):
            core.resources.update(caller, "Questionnaire", questionnaire["id"], questionnaire)
    studies = month_studies(core, caller, month)
    count = min(len(studies), max(1, round(len(studies) * rate))) if studies else 0
    chosen = sorted(random.Random(f"sonobridge-qc:{seed}").sample(studies, count))
    reports = _reports_of(core, caller, month, chosen)
    created = 0
    with core.store.write() as writer:
        for study in chosen:
            stored = core.resources.read(caller, "ImagingStudy", study, writer=writer)
            subject = jsonio.loads(stored.content).get("subject") if stored.content else None
            tasks = [_task(month, "image-qc", f"ImagingStudy/{study}", subject,
                           IMAGE_QC["url"], "存图质控 Image QC review")]
            if study in reports:
                tasks.append(_task(month, "report-qc", f"DiagnosticReport/{reports[study]}",
                                   subject, REPORT_QC["url"], "报告质控 Report QC review"))
            for task, identifier in tasks:
                written = core.resources.create(
                    caller, "Task", task,
                    if_none_exist=f"identifier={SAMPLE_SYSTEM}|{identifier}", writer=writer)
                created += written.created
    return Sample(len(studies), chosen, created)


def attach(core: Core) -> None:
    core.events.listen(ResourceWriting, _on_writing)
