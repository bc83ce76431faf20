"""The national ultrasound QC indicators (超声诊断专业医疗质量控制指标, 2022) as FHIR Measures.

Each population's ``criteria`` is a SQL on FHIR view plus a filter: ``criteria.reference``
is the canonical of the shipped ViewDefinition whose rows the population is drawn from
(``core/views/shipped.py``) and ``criteria.expression`` names the filter applied to those rows,
as a definition of the Library the Measure names (``Measure.library``). R4 binds
``Expression.language`` to a closed list here (the validator refuses other codes), so the
language is ``text/cql-identifier`` — "a named definition in the referenced library" — though
the definitions are not CQL: they are the Python filters of ``indicators.py``, listed with
their meaning in docs/quality.md. A Measure naming a filter this server does not
implement is refused with 422 and the element's path. Stratifiers name the dimension the
report is broken down by: ``organization``, ``practitioner``, ``device``.
"""

from __future__ import annotations

from typing import Any

BASE = "http://sonobridge.org/fhir"
FILTER_LANGUAGE = "text/cql-identifier"
LIBRARY = f"{BASE}/Library/us-qc-indicators"
INDICATOR_SYSTEM = f"{BASE}/CodeSystem/us-qc-indicator"
SCORING = "http://terminology.hl7.org/CodeSystem/measure-scoring"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
STRATA = ("organization", "practitioner", "device")


def _view(view_id: str) -> str:
    return f"{BASE}/ViewDefinition/{view_id}"


def _population(code: str, view_id: str, expression: str, description: str
                ) -> dict[str, Any]:
    return {"code": {"coding": [{"system": POPULATION, "code": code}]},
            "description": description,
            "criteria": {"language": FILTER_LANGUAGE, "expression": expression,
                         "reference": _view(view_id)}}


def _denominator(view_id: str, expression: str, description: str) -> list[dict[str, Any]]:
    """A proportion's initial population and denominator: the same set for every indicator
    here (an exclusion, where an indicator has one, is a population of its own)."""
    return [_population(code, view_id, expression, description)
            for code in ("initial-population", "denominator")]


def _measure(measure_id: str, code: str, title: str, scoring: str,
             improvement: str | None, description: str,
             populations: list[dict[str, Any]], strata: tuple[str, ...] = STRATA,
             unit: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Measure", "id": measure_id, "url": f"{BASE}/Measure/{measure_id}",
        "identifier": [{"system": INDICATOR_SYSTEM, "value": code}],
        "version": "2022", "name": code.replace("-", "_"), "title": title,
        "status": "active", "experimental": False,
        "publisher": "SonoBridge", "description": description,
        "library": [LIBRARY],
        "scoring": {"coding": [{"system": SCORING, "code": scoring}]},
        "group": [{"population": populations, "stratifier": [
            {"code": {"text": s}, "criteria": {"language": FILTER_LANGUAGE, "expression": s}}
            for s in strata]}]}
    if improvement is not None:
        body["improvementNotation"] = {"coding": [{"system": IMPROVEMENT,
                                                   "code": improvement}]}
    if unit is not None:
        body["group"][0]["description"] = unit
    return body


MEASURES: dict[str, dict[str, Any]] = {m["id"]: m for m in (
    _measure(
        "us-hr-01", "US-HR-01", "超声医师月均工作量 Monthly workload per ultrasound doctor",
        "ratio", None,
        "Reports issued in the period / (ultrasound doctors x months of the period). Doctors "
        "are the practitioners who issued an ultrasound report in the period. A workload has "
        "no better direction, so no improvementNotation.",
        [_population("initial-population", "us-reports", "us-hr-01.reports",
                     "final ultrasound reports issued in the period"),
         _population("numerator", "us-reports", "us-hr-01.reports",
                      "final ultrasound reports issued in the period"),
         _population("denominator", "us-reports", "us-hr-01.doctor-months",
                     "practitioners who issued them x months in the period")],
        unit="reports per doctor-month"),
    _measure(
        "us-eq-01", "US-EQ-01", "超声仪器质检率 Ultrasound device QC rate", "proportion",
        "increase",
        "Devices in use whose last passed metrology/imaging QC (extension device-qc-date) "
        "is within the year before the period end / devices in use (status active).",
        [_population("initial-population", "us-devices", "us-eq-01.in-use", "devices in use"),
         _population("denominator", "us-devices", "us-eq-01.in-use", "devices in use"),
         _population("numerator", "us-devices", "us-eq-01.qc-passed",
                     "with a passed QC in the year before the period end")],
        strata=("organization", "device")),
    _measure(
        "us-tl-01", "US-TL-01",
        "住院超声检查48小时内完成率 Inpatient ultrasound reported within 48 h", "proportion",
        "increase",
        "Inpatient ultrasound requests (ServiceRequest of an IMP encounter, category RUS or "
        "code DCM US) ordered in the period and reported (final) within 48 hours of the "
        "order / all such requests; revoked or entered-in-error requests are excluded.",
        [*_denominator("us-requests", "us-tl-01.inpatient-requests",
                       "inpatient ultrasound requests ordered in the period"),
         _population("denominator-exclusion", "us-requests", "us-tl-01.withdrawn",
                     "revoked or entered in error"),
         _population("numerator", "us-reports", "us-tl-01.reported-48h",
                     "a final report issued within 48 h of the order")]),
    _measure(
        "us-cv-01", "US-CV-01",
        "超声危急值10分钟内通报完成率 Critical values notified within 10 minutes",
        "proportion", "increase",
        "Critical value notifications (Communication, category alert, about a report issued "
        "in the period) sent within 10 minutes of the report's issue time / all of them.",
        [*_denominator("us-critical-values", "us-cv-01.critical-values",
                       "critical value notifications of reports issued in the period"),
         _population("numerator", "us-critical-values", "us-cv-01.within-10-min",
                     "sent within 10 minutes of the report")]),
    _measure(
        "us-rq-01", "US-RQ-01", "超声报告书写合格率 Report writing qualified rate",
        "proportion", "increase",
        "Report QC reviews (QuestionnaireResponse completed, subject a DiagnosticReport) "
        "authored in the period whose total score reaches the pass mark (80) / reports "
        "reviewed.",
        [*_denominator("us-qc-reviews", "us-rq-01.reviewed",
                       "reports reviewed in the period"),
         _population("numerator", "us-qc-reviews", "us-rq-01.qualified",
                     "total score at least the pass mark")]),
    _measure(
        "us-br-01", "US-BR-01",
        "乳腺病变超声报告BI-RADS分类率 BI-RADS category rate of breast-lesion reports",
        "proportion", "increase",
        "Final breast ultrasound reports (LOINC 24601-7, or 乳腺/breast in the code's text) "
        "issued in the period with a lesion (a coded conclusion other than Normal) whose "
        "conclusion carries a BI-RADS category / all such reports.",
        [*_denominator("us-reports", "us-br-01.breast-lesion-reports",
                       "final breast reports with a lesion issued in the period"),
         _population("numerator", "us-reports", "us-br-01.bi-rads",
                     "with a BI-RADS category")]),
    _measure(
        "us-ic-01", "US-IC-01",
        "超声介入相关主要并发症发生率 Major complication rate of ultrasound-guided interventions",
        "proportion", "decrease",
        "Completed ultrasound-guided Procedures performed in the period with a complication "
        "recorded / all of them (lower is better).",
        [*_denominator("us-interventions", "us-ic-01.interventions",
                       "completed ultrasound-guided procedures performed in the period"),
         _population("numerator", "us-interventions", "us-ic-01.complicated",
                     "with a complication recorded")]),
    _measure(
        "us-pr-01", "US-PR-01", "超声检查阳性率 Positive rate of ultrasound exams",
        "proportion", None,
        "Final ultrasound reports issued in the period with a coded conclusion other than "
        "SNOMED CT 17621005 Normal / all final reports issued in the period. A positive rate "
        "is watched against a range, not maximised: no improvementNotation.",
        [*_denominator("us-reports", "us-pr-01.reports",
                       "final ultrasound reports issued in the period"),
         _population("numerator", "us-reports", "us-pr-01.positive",
                     "with a coded abnormal conclusion")]),
)}
