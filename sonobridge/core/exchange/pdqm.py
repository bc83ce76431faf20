"""IHE PDQm ITI-119 Patient Demographics Match: ``POST Patient/$match``.

ITI-78 (a Patient search) finds patients by what the client says exactly; ``$match`` finds the
patients most likely to be the person a client describes, each with a score, as a platform
does before it registers a resident it may already know. Candidates are found with bounded
searches run with the caller's rights — by each identifier given, then by family name and
birth date, then by family name alone — at most ``MAX_CANDIDATES`` patients, and each is
scored:

- an identifier (system and value) the patient carries: 1.0, grade ``certain``;
- otherwise the demographics: family name 0.3, given name 0.2 (a Chinese name written as one
  ``text`` counts as family + given when it equals them joined), birth date 0.3, gender 0.1,
  a telephone or e-mail 0.1; a birth date or gender that contradicts the patient's takes
  0.3 / 0.1 off. Grades: ``probable`` from 0.8, ``possible`` from 0.5; below that the
  patient is left out (``certainly-not`` is never listed).

The answer is a ``searchset`` Bundle ordered by score, each entry with ``search.score`` and
the ``match-grade`` extension; ``onlyCertainMatches=true`` keeps the certain ones only;
``count`` (at most 50, default 10) bounds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sonobridge.core.errors import CoreError
from sonobridge.core.exchange.pixm import as_dict
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.resources import SearchSpec

if TYPE_CHECKING:
    from sonobridge.core.services import Core

DEFINITION = "https://profiles.ihe.net/ITI/PDQm/OperationDefinition/IHE.PDQm.match"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
MAX_CANDIDATES = 100
MAX_COUNT = 50
MAX_IDENTIFIERS = 10


def _token(value: str) -> str:
    for char in ("\\", "|", ",", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _names(patient: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(family names, given names, whole names) of a Patient, whitespace removed."""
    family, given, whole = set(), set(), set()
    for name in patient.get("name") or []:
        f = "".join(str(name.get("family") or "").split())
        g = "".join("".join(str(x).split()) for x in name.get("given") or [])
        if f:
            family.add(f.lower())
        if g:
            given.add(g.lower())
        if f or g:
            whole.add((f + g).lower())
        if name.get("text"):
            whole.add("".join(str(name["text"]).split()).lower())
    return family, given, whole


def _contacts(patient: dict[str, Any]) -> set[str]:
    return {"".join(str(t.get("value") or "").split()).lower()
            for t in patient.get("telecom") or [] if t.get("value")}


def score(asked: dict[str, Any], patient: dict[str, Any]) -> tuple[float, str]:
    """The score (0..1) and grade of ``patient`` as the person ``asked`` describes."""
    held = {(i.get("system"), i.get("value")) for i in patient.get("identifier") or []}
    if any((i.get("system"), i.get("value")) in held for i in asked.get("identifier") or []
           if i.get("system") and i.get("value")):
        return 1.0, "certain"
    a_family, a_given, a_whole = _names(asked)
    p_family, p_given, p_whole = _names(patient)
    total = 0.0
    if a_family & p_family:
        total += 0.3
        if a_given & p_given:
            total += 0.2
    elif a_whole & p_whole:
        total += 0.5
    if asked.get("birthDate") and patient.get("birthDate"):
        total += 0.3 if asked["birthDate"] == patient["birthDate"] else -0.3
    if asked.get("gender") and patient.get("gender"):
        total += 0.1 if asked["gender"] == patient["gender"] else -0.1
    if _contacts(asked) & _contacts(patient):
        total += 0.1
    total = round(max(0.0, min(total, 0.99)), 2)
    grade = "probable" if total >= 0.8 else "possible" if total >= 0.5 else "certainly-not"
    return total, grade


class Pdqm:
    def __init__(self, core: Core) -> None:
        self.core = core

    def attach(self) -> None:
        self.core.operations.register(Operation(
            "match", frozenset({"type"}), self.match, types=frozenset({"Patient"}),
            definition=DEFINITION,
            documentation="IHE PDQm ITI-119: the patients most likely to be the one the "
                          "resource parameter describes, scored and graded."))

    def _search(self, call: OperationCall, params: list[tuple[str, str]]
                ) -> list[dict[str, Any]]:
        result = self.core.resources.search(call.caller, SearchSpec(
            "Patient", [*params, ("_count", str(MAX_CANDIDATES))]))
        return [as_dict(e["resource"]) for e in result.bundle.get("entry") or []
                if (e.get("search") or {}).get("mode", "match") == "match"]

    def match(self, call: OperationCall) -> OperationResult:
        asked = call.resource_param()
        if not isinstance(asked, dict) or asked.get("resourceType") != "Patient":
            raise CoreError(400, "required", "$match needs the Patient to match as the "
                            "'resource' parameter", expression=["resource"])
        only_certain = str(call.param("onlyCertainMatches", "false")).lower() == "true"
        try:
            count = int(call.param("count", 10))
        except (TypeError, ValueError):
            raise CoreError(400, "invalid", "count is a whole number",
                            expression=["count"]) from None
        if not 1 <= count <= MAX_COUNT:
            raise CoreError(400, "invalid", f"count is between 1 and {MAX_COUNT}",
                            expression=["count"])
        identifiers = [i for i in asked.get("identifier") or []
                       if i.get("system") and i.get("value")][:MAX_IDENTIFIERS]
        family = next(iter(_names(asked)[0]), "")
        whole = next(iter(_names(asked)[2]), "")
        if not identifiers and not family and not whole:
            raise CoreError(400, "required", "$match needs an identifier or a name to look "
                            "for", expression=["resource.identifier", "resource.name"])
        candidates: dict[str, dict[str, Any]] = {}
        if identifiers:
            tokens = ",".join(f"{_token(str(i['system']))}|{_token(str(i['value']))}"
                              for i in identifiers)
            for found in self._search(call, [("identifier", tokens)]):
                candidates[str(found["id"])] = found
        if not (only_certain and candidates):
            queries = []
            if family and asked.get("birthDate"):
                queries.append([("family", family), ("birthdate", str(asked["birthDate"]))])
            if family:
                queries.append([("family", family)])
            elif whole:
                queries.append([("name", whole)])
            for query in queries:
                if len(candidates) >= MAX_CANDIDATES:
                    break
                for found in self._search(call, query):
                    candidates.setdefault(str(found["id"]), found)
        scored = []
        for patient in candidates.values():
            value, grade = score(asked, patient)
            if grade == "certainly-not" or (only_certain and grade != "certain"):
                continue
            scored.append((value, grade, patient))
        scored.sort(key=lambda s: -s[0])
        entries = [{
            "fullUrl": f"{call.caller.base}/Patient/{patient['id']}", "resource": patient,
            "search": {"mode": "match", "score": value, "extension": [
                {"url": MATCH_GRADE, "valueCode": grade}]},
        } for value, grade, patient in scored[:count]]
        return OperationResult({"resourceType": "Bundle", "type": "searchset",
                                "total": len(entries), "entry": entries})


def attach(core: Core) -> None:
    Pdqm(core).attach()
