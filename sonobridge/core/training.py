"""Training records (培训记录): one trainee's courses, assessments, live sessions attended and
certificates, read from the FHIR resources that hold them.

The model (docs/training.md, "Training records"):

* a course is a ``PlanDefinition`` (type ``urn:sonobridge:training|course``) whose
  ``relatedArtifact`` lists its teaching cases and recorded sessions (``DocumentReference``);
* an enrolment is a ``Task`` (code ``urn:sonobridge:training|assignment``) owned by the
  trainee (``owner`` = Practitioner) with the course as ``focus``;
* an assessment is a ``QuestionnaireResponse`` authored by the trainee to a ``Questionnaire``
  carrying the ``urn:sonobridge:training:pass-mark`` extension. When the Questionnaire marks
  its correct options (``answerOption`` extension ``urn:sonobridge:training:correct``), the
  server scores the response as it is written (``score_assessment``): the percentage of the
  points (item extension ``urn:sonobridge:training:points``, default 1) of the items answered
  exactly right, in the response's ``urn:sonobridge:training:score`` extension with
  ``...:passed``. Otherwise (a practical assessment) the trainer scores it in the item
  ``score``; a trainee never writes its own score;
* attendance of a live session is an ``Encounter`` of class ``VR`` (virtual) with the trainee
  as a participant;
* certificates are ``Practitioner.qualification`` entries, with CME credits in the
  ``urn:sonobridge:training:cme-credits`` extension.

The records are written through the FHIR API like any other; the one listener here scores
assessments and keeps a completed one final for the trainee.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceWriting
from sonobridge.core.policy import Caller
from sonobridge.core.roles import teaching_only
from sonobridge.jsonio import dumps, loads

if TYPE_CHECKING:
    from sonobridge.core.services import Core

TRAINING = "urn:sonobridge:training"
PASS_MARK = "urn:sonobridge:training:pass-mark"
CME_CREDITS = "urn:sonobridge:training:cme-credits"
CORRECT = "urn:sonobridge:training:correct"
POINTS = "urn:sonobridge:training:points"
SCORE = "urn:sonobridge:training:score"
PASSED = "urn:sonobridge:training:passed"
MAX_ITEMS = 2000  # questions and answers walked when scoring one response (bounded work)
MAX_ROWS = 1000  # per kind of record in one report


@dataclass
class Record:
    practitioner: str
    name: str
    courses: list[dict[str, Any]] = field(default_factory=list)
    assessments: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def credits(self) -> Decimal:
        return sum((Decimal(str(c["credits"])) for c in self.certificates
                    if c.get("credits") is not None), Decimal(0))


def report(core: Core, caller: Caller, practitioner_id: str) -> Record:
    """The trainee's record, as ``caller`` may read it (403/404 as the API answers)."""
    practitioner = _read(core, caller, "Practitioner", practitioner_id)
    ref = f"Practitioner/{practitioner_id}"
    record = Record(practitioner_id, _name(practitioner))
    for task in _search(core, caller, "Task", [("owner", ref)]):
        if not any(c.get("system") == TRAINING and c.get("code") == "assignment"
                   for c in (task.get("code") or {}).get("coding", [])):
            continue
        focus = (task.get("focus") or {}).get("reference", "")
        title = focus
        if focus.startswith("PlanDefinition/"):
            course = _maybe(core, caller, "PlanDefinition", focus.split("/", 1)[1])
            title = (course or {}).get("title") or focus
        record.courses.append({"course": title, "status": task.get("status", ""),
                               "assigned": task.get("authoredOn", "")})
    for response in _search(core, caller, "QuestionnaireResponse", [("author", ref)]):
        score = _score_of(response)
        questionnaire = str(response.get("questionnaire", ""))
        definition = _questionnaire(core, caller, questionnaire)
        pass_mark = _extension(definition, PASS_MARK)
        record.assessments.append({
            "assessment": (definition or {}).get("title") or questionnaire,
            "date": response.get("authored", ""), "score": score, "pass_mark": pass_mark,
            "passed": None if score is None or pass_mark is None
            else Decimal(str(score)) >= Decimal(str(pass_mark))})
    for encounter in _search(core, caller, "Encounter", [("participant", ref)]):
        if (encounter.get("class") or {}).get("code") != "VR":
            continue
        record.sessions.append({"session": encounter.get("id", ""),
                                "start": (encounter.get("period") or {}).get("start", ""),
                                "status": encounter.get("status", "")})
    for qualification in practitioner.get("qualification", []):
        code = qualification.get("code") or {}
        record.certificates.append({
            "certificate": code.get("text") or next(
                (c.get("display") or c.get("code") for c in code.get("coding", [])), ""),
            "issued": (qualification.get("period") or {}).get("start", ""),
            "expires": (qualification.get("period") or {}).get("end", ""),
            "issuer": (qualification.get("issuer") or {}).get("display", ""),
            "credits": _extension(qualification, CME_CREDITS)})
    return record


def _read(core: Core, caller: Caller, res_type: str, res_id: str) -> dict[str, Any]:
    value: dict[str, Any] = loads(core.resources.read(caller, res_type, res_id).content or b"{}")
    return value


def _maybe(core: Core, caller: Caller, res_type: str, res_id: str) -> dict[str, Any] | None:
    try:
        return _read(core, caller, res_type, res_id)
    except CoreError:
        return None


def _search(core: Core, caller: Caller, res_type: str, params: list[tuple[str, str]]
            ) -> list[dict[str, Any]]:
    with core.store.write() as writer:
        ids = core.resources.find(writer, res_type, params, caller.base, limit=MAX_ROWS,
                                  caller=caller)
        found = [core.resources.current(writer, res_type, i) for i in ids]
    return [dict(r, id=i) for r, i in zip(found, ids, strict=True) if r is not None]


def _questionnaire(core: Core, caller: Caller, canonical: str) -> dict[str, Any] | None:
    if canonical.startswith("Questionnaire/"):
        return _maybe(core, caller, "Questionnaire", canonical.split("/", 1)[1])
    if not canonical:
        return None
    found = _search(core, caller, "Questionnaire", [("url", canonical.split("|")[0])])
    return found[0] if found else None


def _score_of(response: dict[str, Any]) -> Any:
    """The server's score when it scored the response, else the trainer's ``score`` item."""
    found = _extension(response, SCORE)
    return found if found is not None else _score(response.get("item", []))


def _score(items: list[dict[str, Any]]) -> Any:
    for item in items:
        if item.get("linkId") == "score":
            for answer in item.get("answer", []):
                for key in ("valueDecimal", "valueInteger"):
                    if key in answer:
                        return answer[key]
        nested = _score(item.get("item", []))
        if nested is not None:
            return nested
    return None


def _extension(resource: dict[str, Any] | None, url: str) -> Any:
    for ext in (resource or {}).get("extension", []):
        if ext.get("url") == url:
            for key in ("valueDecimal", "valueInteger"):
                if key in ext:
                    return ext[key]
    return None


def _name(practitioner: dict[str, Any]) -> str:
    for name in practitioner.get("name", []):
        if name.get("text"):
            return str(name["text"])
        parts = [*name.get("given", []), name.get("family", "")]
        if any(parts):
            return " ".join(p for p in parts if p)
    return ""


# ---------------------------------------------------------------- scoring assessments


def attach(core: Core) -> None:
    """Score assessments as they are written (the ``ResourceWriting`` hook)."""
    core.events.listen(ResourceWriting, lambda event: score_assessment(core, event))


def score_assessment(core: Core, event: ResourceWriting) -> None:
    """Score a QuestionnaireResponse to an assessment (a Questionnaire with a pass mark).

    Why here, on the write: a trainee's score must not be the trainee's claim. Refusals, each
    an OperationOutcome with the element's path: 422 for an answer to a question the
    assessment does not have, for a trainee writing a score, or for a response too large to
    score; 409 for a trainee changing an assessment it already completed."""
    if event.res_type != "QuestionnaireResponse":
        return
    response = event.resource
    trainee = teaching_only(event.caller.policy.role)
    if trainee and event.previous is not None and \
            event.previous.get("status") in ("completed", "amended"):
        raise CoreError(409, "conflict", "a completed assessment is final for the trainee; "
                        "the trainer amends it", expression=["QuestionnaireResponse.status"])
    questionnaire = _definition(core, event)
    if questionnaire is None or _extension(questionnaire, PASS_MARK) is None:
        return  # not an assessment
    questions: dict[str, dict[str, Any]] = {}
    _walk_questions(questionnaire.get("item", []), questions)
    scored = any(_correct(q) for q in questions.values())
    given: dict[str, list[dict[str, Any]]] = {}
    _walk_answers(response.get("item", []), "QuestionnaireResponse", questions, given)
    if not scored:
        if trainee and (_score(response.get("item", [])) is not None
                        or _extension(response, SCORE) is not None):
            raise CoreError(422, "business-rule", "a trainee does not score its own "
                            "assessment: the trainer does", expression=[
                                "QuestionnaireResponse.item.where(linkId='score')"])
        _set_score(response, None, None)
        return
    if response.get("status") not in ("completed", "amended"):
        _set_score(response, None, None)  # an unfinished attempt has no score yet
        return
    total = earned = Decimal(0)
    for link_id, question in questions.items():
        correct = _correct(question)
        if not correct:
            continue
        points = Decimal(str(_extension(question, POINTS) or 1))
        total += points
        if sorted(_value_key(a) for a in given.get(link_id, [])) == sorted(correct):
            earned += points
    score = (earned * 100 / total).quantize(Decimal("0.01")) if total else Decimal(0)
    passed = score >= Decimal(str(_extension(questionnaire, PASS_MARK)))
    _set_score(response, score, passed)


def _definition(core: Core, event: ResourceWriting) -> dict[str, Any] | None:
    canonical = str(event.resource.get("questionnaire") or "")
    if not canonical:
        return None
    writer = event.writer
    if canonical.startswith("Questionnaire/"):
        return core.resources.current(writer, "Questionnaire", canonical.split("/")[1])
    url, _, version = canonical.partition("|")
    query = [("url", url)] + ([("version", version)] if version else [])
    found = core.resources.find(writer, "Questionnaire", query, event.caller.base, limit=2)
    if len(found) != 1:
        return None
    return core.resources.current(writer, "Questionnaire", found[0])


def _walk_questions(items: list[dict[str, Any]], out: dict[str, dict[str, Any]]) -> None:
    for item in items:
        if len(out) >= MAX_ITEMS:
            raise CoreError(422, "too-costly", f"the assessment has more than {MAX_ITEMS} "
                            "questions", expression=["Questionnaire.item"])
        out[str(item.get("linkId"))] = item
        _walk_questions(item.get("item", []), out)


def _walk_answers(items: list[dict[str, Any]], path: str, questions: dict[str, dict[str, Any]],
                  out: dict[str, list[dict[str, Any]]], seen: list[int] | None = None) -> None:
    seen = seen if seen is not None else [0]
    for index, item in enumerate(items):
        where = f"{path}.item[{index}]"
        seen[0] += 1 + len(item.get("answer", []))
        if seen[0] > MAX_ITEMS:
            raise CoreError(422, "too-costly", f"the response has more than {MAX_ITEMS} items "
                            "and answers to score", expression=[where])
        link_id = str(item.get("linkId"))
        if link_id not in questions:
            raise CoreError(422, "invalid", f"linkId {link_id!r} is not a question of the "
                            "assessment", expression=[f"{where}.linkId"])
        out.setdefault(link_id, []).extend(item.get("answer", []))
        _walk_answers(item.get("item", []), where, questions, out, seen)
        for number, answer in enumerate(item.get("answer", [])):
            _walk_answers(answer.get("item", []), f"{where}.answer[{number}]", questions, out,
                          seen)


def _correct(question: dict[str, Any]) -> list[str]:
    """The question's correct options, each as a comparable key."""
    return sorted(_value_key(option) for option in question.get("answerOption", [])
                  if any(e.get("url") == CORRECT and e.get("valueBoolean") is True
                         for e in option.get("extension", [])))


def _value_key(answer: dict[str, Any]) -> str:
    """An answer's or option's value[x], comparable: a Coding by system and code only."""
    for key, value in answer.items():
        if key.startswith("value"):
            if key == "valueCoding" and isinstance(value, dict):
                value = {"system": value.get("system"), "code": value.get("code")}
            return dumps({key: value}, sort_keys=True).decode()
    return ""


def _set_score(response: dict[str, Any], score: Decimal | None, passed: bool | None) -> None:
    extensions = [e for e in response.get("extension", [])
                  if e.get("url") not in (SCORE, PASSED)]
    if score is not None and passed is not None:
        extensions += [{"url": SCORE, "valueDecimal": float(score)},
                       {"url": PASSED, "valueBoolean": passed}]
    if extensions:
        response["extension"] = extensions
    else:
        response.pop("extension", None)
