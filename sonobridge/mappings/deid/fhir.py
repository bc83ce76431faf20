"""A FHIR DiagnosticReport de-identified like its images: the same pseudo patient, dates
shifted by the same days, narrative and conclusion cleaned of the patient's names and IDs.

An allow-list, not a deny-list: only the elements named here are copied (a report's
extensions, contained resources, performers, identifiers and attached PDF could each carry
identity, and a PDF cannot be cleaned), so an element added to a report later is left out
until someone decides it is safe. Pure: the shift, the identifying strings and the new
references are given.
"""

from __future__ import annotations

import html
import re
from typing import Any

from sonobridge.mappings.deid.dates import shift_fhir
from sonobridge.mappings.deid.text import scrub

# Copied as they are: codes name findings and procedures, not people.
_CODED = ("status", "category", "code", "conclusionCode")
_TAG = {"system": "urn:sonobridge:teaching", "code": "deidentified",
        "display": "de-identified copy"}
_XHTML = re.compile(r">([^<]+)<")


def deidentify_report(report: dict[str, Any], *, days: int, identifying: tuple[str, ...],
                      subject: str | None, imaging_study: str | None) -> dict[str, Any]:
    """The de-identified copy of ``report`` (a new resource: no id, no meta of its own)."""
    out: dict[str, Any] = {"resourceType": "DiagnosticReport",
                           "meta": {"tag": [dict(_TAG)],
                                    "security": [{"system": "http://terminology.hl7.org/"
                                                  "CodeSystem/v3-ObservationValue",
                                                  "code": "PSEUDED",
                                                  "display": "pseudonymized"}]}}
    for key in _CODED:
        if key in report:
            out[key] = report[key]
    out.setdefault("status", "final")
    out.setdefault("code", {"text": "Ultrasound report"})
    if subject:
        out["subject"] = {"reference": subject}
    if imaging_study:
        out["imagingStudy"] = [{"reference": imaging_study}]
    for key in ("effectiveDateTime", "issued"):
        if isinstance(report.get(key), str):
            shifted = shift_fhir(report[key], days)
            if shifted is not None:
                out[key] = shifted
    period = report.get("effectivePeriod")
    if isinstance(period, dict):
        moved = {k: shift_fhir(v, days) for k, v in period.items()
                 if k in ("start", "end") and isinstance(v, str)}
        if all(v is not None for v in moved.values()) and moved:
            out["effectivePeriod"] = moved
    if isinstance(report.get("conclusion"), str):
        out["conclusion"] = scrub(report["conclusion"], identifying)
    text = report.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        out["text"] = {"status": "generated", "div": clean_div(text["div"], identifying)}
    return out


def clean_div(div: str, identifying: tuple[str, ...]) -> str:
    """The narrative's text nodes cleaned (markup kept; an attribute could carry identity
    too, so the div is rebuilt as paragraphs of its cleaned text)."""
    texts = [scrub(html.unescape(t), identifying) for t in _XHTML.findall(div)]
    body = "".join(f"<p>{html.escape(t.strip())}</p>" for t in texts if t.strip())
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body or "<p>de-identified</p>"}</div>'
