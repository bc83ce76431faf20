"""DiagnosticReport -> ORU^R01 (HL7 v2.5.1), the result message a HIS expects for its order.

Pure: the report, its order, patient and observations come in as FHIR dicts, the control id
and timestamp are given. OBR carries the order numbers (placer, filler) so the HIS files the
result against its order; the report text goes in TX OBX segments, measurements in NM ones.
MSH-18 names the character set the caller will encode it in (``UNICODE UTF-8`` by default).
"""

from __future__ import annotations

import base64
from datetime import datetime
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


def _coding(concept: dict[str, Any] | None) -> str:
    coding = ((concept or {}).get("coding") or [{}])[0]
    code = coding.get("code", "")
    text = coding.get("display") or (concept or {}).get("text", "")
    system = coding.get("system", "")
    system = "LN" if system == "http://loinc.org" else ("SCT" if "snomed" in system else "L")
    return "^".join([_escape(code), _escape(text), system if code else ""]).rstrip("^")


NARRATIVE = "18782-3^Radiology Study observation (narrative)^LN"


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
            charset: str = "UNICODE UTF-8") -> str:
    """``correction``: a result for this report was sent before, so this one is C whatever
    the report's status says (HL7 table 0085)."""
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
    for obs in observations:
        quantity = obs.get("valueQuantity")
        number += 1
        if quantity and "value" in quantity:
            unit = quantity.get("code") or quantity.get("unit", "")
            segments.append("|".join(["OBX", str(number), "NM", _coding(obs.get("code")), "",
                                      str(quantity["value"]), _escape(str(unit)), "", "", "",
                                      "", STATUS.get(obs.get("status", "final"), "F")]))
        elif obs.get("valueString"):
            segments.append("|".join(["OBX", str(number), "ST", _coding(obs.get("code")), "",
                                      _escape(str(obs["valueString"])), "", "", "", "", "",
                                      STATUS.get(obs.get("status", "final"), "F")]))
        else:
            number -= 1
    return "\r".join(segments) + "\r"
