"""DiagnosticReport -> ORU^R01 (HL7 v2.5.1), the result message a HIS expects for its order.

Pure: the report, its order, patient and observations come in as FHIR dicts, the control id
and timestamp are given. OBR carries the order numbers (placer, filler) so the HIS files the
result against its order; the report text goes in TX OBX segments, measurements in NM ones,
coded findings in CWE ones.
MSH-18 names the character set the caller will encode it in (``UNICODE UTF-8`` by default).

A report lists an SR's measurements by their measurement-group Observations (``result`` ->
group, ``hasMember`` -> measurements, as ``mappings/sr.py`` makes them): the groups are
followed (``members_of`` reads the members, ``measurements`` orders them), each measurement
goes out once, and the members of a group share an OBX-4 sub-ID ("1", "2"; "1.1" for a
group within group 1) so that a receiver can tell twin A's BPD from twin B's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sonobridge.mappings.hl7v2 import V2_0203

STATUS = {"final": "F", "amended": "C", "corrected": "C", "appended": "C",
          "cancelled": "X", "entered-in-error": "W", "preliminary": "P"}


def _escape(text: str) -> str:
    out = text.replace("\\", "\\E\\")
    for char, code in (("|", "F"), ("^", "S"), ("~", "R"), ("&", "T")):
        out = out.replace(char, f"\\{code}\\")
    return out


def _ident(resource: dict[str, Any], code: str) -> str:
    for ident in resource.get("identifier", []):
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])}
        if code in codes:
            return str(ident.get("value", ""))
    return ""


def _ts(value: str | None) -> str:
    """FHIR dateTime/instant -> HL7 DTM (YYYYMMDDHHMMSS+ZZZZ)."""
    if not value:
        return ""
    if len(value) <= 10:
        return value.replace("-", "")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return ""
    return moment.strftime("%Y%m%d%H%M%S") + (moment.strftime("%z") if moment.tzinfo else "")


# FHIR code systems -> HL7 table 0396 coding system names (CWE-3/CE-3); any other system is
# sent as a local code ("L"), never with a made-up name.
SYSTEMS_0396 = {"http://loinc.org": "LN", "http://snomed.info/sct": "SCT",
                "http://dicom.nema.org/resources/ontology/DCM": "DCM",
                "http://unitsofmeasure.org": "UCUM", "http://hl7.org/fhir/sid/icd-10": "I10"}
UCUM = "http://unitsofmeasure.org"


def _coding(concept: dict[str, Any] | None) -> str:
    coding = ((concept or {}).get("coding") or [{}])[0]
    code = coding.get("code", "")
    text = coding.get("display") or (concept or {}).get("text", "")
    system = SYSTEMS_0396.get(str(coding.get("system", "")), "L")
    return "^".join([_escape(code), _escape(text), system if code else ""]).rstrip("^")


def _units(quantity: dict[str, Any]) -> str:
    """OBX-6 (CE): a UCUM unit as ``code^text^UCUM`` so the receiver knows the unit system
    (HL7 v2.5.1 7.4.2.6 recommends UCUM); a unit without a UCUM code as its text only."""
    code, text = str(quantity.get("code") or ""), str(quantity.get("unit") or "")
    if code and quantity.get("system") == UCUM:
        return "^".join([_escape(code), _escape(text or code), "UCUM"])
    return _escape(text or code)


def _number(value: Any) -> str | None:
    """An NM value as HL7 writes numbers: plain decimal digits, never an exponent (``1e-05``
    is not an NM); None for what is not a finite number (no OBX then)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    if not number.is_finite():
        return None
    text = format(number, "f")
    return text


NARRATIVE = "18782-3^Radiology Study observation (narrative)^LN"

MAX_GROUP_DEPTH = 4  # groups in groups: an SR nests one or two; more is broken or hostile
MAX_MEMBERS = 2000  # Observations read through hasMember per report (the SR mapping's bound)


def _members(obs: dict[str, Any]) -> list[str]:
    refs = obs.get("hasMember")
    if not isinstance(refs, list):
        return []
    return [ref["reference"] for ref in refs
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str)]


def members_of(observations: list[dict[str, Any]],
               read: Callable[[str], dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """The Observations the groups among ``observations`` hold, by the reference that names
    them (``read`` turns a reference into the resource, or ``None``), following groups in
    groups to ``MAX_GROUP_DEPTH``; each reference read once, at most ``MAX_MEMBERS``."""
    found: dict[str, dict[str, Any]] = {}
    tried: set[str] = set()
    level = observations
    for _ in range(MAX_GROUP_DEPTH):
        following: list[dict[str, Any]] = []
        for obs in level:
            for ref in _members(obs):
                if ref in tried or len(tried) >= MAX_MEMBERS:
                    continue
                tried.add(ref)
                member = read(ref)
                if member is not None and member.get("resourceType") == "Observation":
                    found[ref] = member
                    following.append(member)
        if not following:
            break
        level = following
    return found


def measurements(observations: list[dict[str, Any]],
                 members: Mapping[str, dict[str, Any]] | None = None
                 ) -> list[tuple[str, dict[str, Any]]]:
    """(OBX-4 sub-ID, Observation) in the order they go out: each of the report's results,
    and after a group its members (from ``members``, by reference) under the group's sub-ID,
    groups in groups to ``MAX_GROUP_DEPTH``. Each Observation once (the first place it is
    found: a measurement listed in ``result`` and in a group goes out once)."""
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    seen_objects: set[int] = set()

    def first_time(obs: dict[str, Any], ref: str | None) -> bool:
        key = f"Observation/{obs['id']}" if isinstance(obs.get("id"), str) else ref
        if key is None:
            if id(obs) in seen_objects:
                return False
            seen_objects.add(id(obs))
            return True
        if key in seen:
            return False
        seen.add(key)
        if ref is not None:
            seen.add(ref)
        return True

    def visit(obs: dict[str, Any], ref: str | None, sub_id: str, depth: int,
              number: list[int]) -> None:
        if not first_time(obs, ref):
            return
        held = [(ref, members[ref]) for ref in _members(obs) if ref in members] \
            if members and depth < MAX_GROUP_DEPTH else []
        if not held:
            out.append((sub_id, obs))
            return
        number[0] += 1
        group_id = f"{sub_id}.{number[0]}" if sub_id else str(number[0])
        out.append((group_id, obs))  # a group with a value of its own goes with its members
        inner = [0]
        for member_ref, member in held:
            visit(member, member_ref, group_id, depth + 1, inner)

    top = [0]
    for obs in observations:
        visit(obs, None, "", 0, top)
    return out


def _has_code(concept: dict[str, Any] | None) -> bool:
    return bool(((concept or {}).get("coding") or [{}])[0].get("code"))


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report's text: its conclusion, then any text/plain presentedForm."""
    lines: list[str] = []
    if report.get("conclusion"):
        lines += str(report["conclusion"]).splitlines()
    for form in report.get("presentedForm", []):
        if str(form.get("contentType", "")).startswith("text/plain") and form.get("data"):
            try:
                lines += base64.b64decode(form["data"]).decode("utf-8").splitlines()
            except (ValueError, UnicodeDecodeError):
                continue
    return [line for line in lines if line.strip()] or ["(no report text)"]


def oru_r01(report: dict[str, Any], order: dict[str, Any], patient: dict[str, Any],
            observations: list[dict[str, Any]], *, control_id: str, now: str,
            sending: tuple[str, str], receiving: tuple[str, str],
            patient_id_system: str, correction: bool = False,
            charset: str = "UNICODE UTF-8",
            members: Mapping[str, dict[str, Any]] | None = None) -> str:
    """``correction``: a result for this report was sent before, so this one is C whatever
    the report's status says (HL7 table 0085). ``observations`` are the report's results;
    ``members`` the Observations their groups hold, by reference (``members_of``)."""
    status = STATUS.get(report.get("status", "final"), "F")
    if correction and status == "F":
        status = "C"
    mr = ""
    authority = ""
    for ident in patient.get("identifier", []):
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])
                 if c.get("system") == V2_0203}
        if "MR" in codes or ident.get("system") == patient_id_system:
            mr = str(ident.get("value", ""))
            system = str(ident.get("system", ""))
            authority = system.rsplit(":", 1)[-1] if system.startswith("urn:sonobridge:hl7") \
                else ""
            break
    name = (patient.get("name") or [{}])[0]
    pn = "^".join([_escape(name.get("family", "")),
                   _escape(" ".join(name.get("given", [])))]).rstrip("^")
    sex = {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(
        patient.get("gender", ""), "")
    placer, filler = _ident(order, "PLAC"), _ident(order, "FILL") or _ident(order, "ACSN")
    segments = [
        "|".join(["MSH", "^~\\&", sending[0], sending[1], receiving[0], receiving[1], now, "",
                  "ORU^R01^ORU_R01", control_id, "P", "2.5.1", "", "", "AL", "NE", "",
                  charset]),
        "|".join(["PID", "1", "", f"{_escape(mr)}^^^{_escape(authority)}^MR" if mr else "",
                  "", pn, "", patient.get("birthDate", "").replace("-", ""), sex]),
        "|".join(["ORC", "RE", placer, filler, "", "CM"]),
        "|".join(["OBR", "1", placer, filler, _coding(order.get("code") or report.get("code")),
                  "", "", _ts(report.get("effectiveDateTime")), "", "", "", "", "", "", "",
                  "", "", "", "", "", "", "", _ts(report.get("issued")), "", "", status]),
    ]
    number = 0
    # OBX-3 must identify the observation: the report's code, or LOINC's narrative report.
    text_code = _coding(report.get("code")) if _has_code(report.get("code")) else NARRATIVE
    for line in report_lines(report):
        number += 1
        segments.append("|".join(["OBX", str(number), "TX", text_code, "1", _escape(line),
                                  "", "", "", "", "", status]))
    for sub_id, obs in measurements(observations, members):
        quantity = obs.get("valueQuantity")
        obs_status = STATUS.get(obs.get("status", "final"), "F")
        value = _number(quantity.get("value")) if isinstance(quantity, dict) else None
        if isinstance(quantity, dict) and value is not None:
            number += 1
            segments.append("|".join(["OBX", str(number), "NM", _coding(obs.get("code")),
                                      sub_id, value, _units(quantity), "", "", "", "",
                                      obs_status]))
        elif obs.get("valueString"):
            number += 1
            segments.append("|".join(["OBX", str(number), "ST", _coding(obs.get("code")),
                                      sub_id, _escape(str(obs["valueString"])), "", "", "", "",
                                      "", obs_status]))
        elif isinstance(concept := obs.get("valueCodeableConcept"), dict) and (
                _has_code(concept) or concept.get("text")):
            # A qualitative finding (an SR's CODE item: "fetal heart activity: present") is a
            # coded value, CWE (HL7 table 0125); one with a text only goes as that text, ST.
            number += 1
            kind, value = ("CWE", _coding(concept)) if _has_code(concept) else (
                "ST", _escape(str(concept["text"])))
            segments.append("|".join(["OBX", str(number), kind, _coding(obs.get("code")),
                                      sub_id, value, "", "", "", "", "", obs_status]))
    return "\r".join(segments) + "\r"
