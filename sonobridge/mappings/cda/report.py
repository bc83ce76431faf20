"""WS/T 500.6 检查报告 from a final ultrasound DiagnosticReport (SonoUltrasoundReport).

What goes where (STANDARDS.md §10):

- header: the report's patient (身份证号 as ``patient/id``; 门(急)诊号, 住院号, 健康卡号 from the
  Patient's identifiers under those OIDs; 检查报告单号 the report's identifier or id; 电子申请单编号
  the request's), ``author`` = 检查报告医师 (``resultsInterpreter``, else the first Practitioner
  performer) at the report's ``issued``, ``custodian`` = the reporting organisation,
  ``legalAuthenticator`` = 审核医师 (the responsible Practitioner ``performer``),
  ``authenticator`` = 检查医师 when the author is someone else, ``relatedDocument`` RPLC for an
  amendment, ``componentOf`` with the location chain (科室 -> 机构);
- body: 诊断记录 (29548-5: each ICD-10 ``conclusionCode`` as DE05.01.024.00), 症状 (11450-4: the
  request's reason), 体格检查 (29545-1: 检查方法名称, 检查类别, and one organizer per
  measurement Observation: 检查项目代码 with the Observation's code and finding site, 定量结果 +
  单位), 检查报告 (客观所见 DE04.50.131.00 from the findings narrative Observation, LOINC 59776-5,
  else the measurements listed; 主观提示 DE04.50.132.00 = ``conclusion``; 报告科室, 报告机构).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda import header as H
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.xml import el, typed

FINAL = frozenset({"final", "amended", "corrected", "appended"})


@dataclass
class ReportSources:
    """The report and what it refers to, as FHIR dicts. ``author`` writes the report
    (检查报告医师), ``verifier`` signs it (审核医师); ``organization`` is the reporting
    institution (custodian), ``department`` its 科室 (optional)."""

    report: dict[str, Any]
    patient: dict[str, Any]
    organization: dict[str, Any] | None
    author: dict[str, Any] | None = None
    verifier: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    department: dict[str, Any] | None = None
    observations: list[dict[str, Any]] = field(default_factory=list)


def is_findings(obs: dict[str, Any]) -> bool:
    """The findings narrative (客观所见): LOINC 59776-5 / 18782-3 with a valueString."""
    return "valueString" in obs and any(
        c.get("system") == "http://loinc.org" and c.get("code") in C.NARRATIVE_FINDINGS_CODES
        for c in (obs.get("code") or {}).get("coding") or [])


def _quantity_text(obs: dict[str, Any]) -> str:
    name = H.concept_text(obs.get("code")) or "-"
    qty = obs.get("valueQuantity")
    if isinstance(qty, dict):
        return f"{name}: {qty.get('value')} {qty.get('unit') or qty.get('code') or ''}".strip()
    if "valueString" in obs:
        return f"{name}: {obs['valueString']}"
    return f"{name}: {H.concept_text(obs.get('valueCodeableConcept')) or '-'}"


def findings_text(sources: ReportSources) -> str:
    narratives = [str(o["valueString"]) for o in sources.observations if is_findings(o)]
    if narratives:
        return "\n".join(narratives)
    measured = [_quantity_text(o) for o in sources.observations if not is_findings(o)]
    return "；".join(measured)  # noqa: RUF001


def _role_ids(sources: ReportSources) -> list[tuple[str, str]]:
    ids: list[tuple[str, str]] = []
    for root in (C.OUTPATIENT_NO, C.INPATIENT_NO, C.HEALTH_CARD):
        value = H.identifier(sources.patient, root)
        if value:
            ids.append((root, value))
    report = sources.report
    ids.append((C.REPORT_NO, H.any_identifier(report, C.REPORT_NO)))
    if sources.request is not None:
        ids.append((C.ORDER_NO, H.any_identifier(sources.request, C.ORDER_NO)))
    return ids


def _measurement(section: etree._Element, obs: dict[str, Any], when: str | None) -> None:
    """One organizer: 检查项目代码 (the Observation's code, finding site, date) and, for a
    quantity, 检查定量结果 (REAL) with its unit (UCUM code) as the WS/T 500.6 template has."""
    org = el(el(section, "entry"), "organizer", classCode="CLUSTER", moodCode="EVN")
    el(org, "statusCode", code="completed")
    item = el(el(org, "component"), "observation", classCode="OBS", moodCode="EVN")
    H.de_code(item, C.DE_ITEM, "检查项目代码")
    effective = H.cda_ts(obs.get("effectiveDateTime")) or when
    if effective:
        el(item, "effectiveTime", value=effective)
    coding = H.coding_of(obs.get("code"), ("http://loinc.org", "http://snomed.info/sct"))
    H.code_el(item, "value", coding, (obs.get("code") or {}).get("text"), xsi_type="CD")
    site = H.coding_of(obs.get("bodySite"))
    if site is not None:
        H.code_el(item, "targetSiteCode", site, (obs.get("bodySite") or {}).get("text"))
    qty = obs.get("valueQuantity")
    if isinstance(qty, dict) and isinstance(qty.get("value"), int | float):
        result = el(el(org, "component"), "observation", classCode="OBS", moodCode="EVN")
        H.de_code(result, C.DE_QUANTITY, "检查定量结果")
        typed(result, "value", "REAL", value=repr(qty["value"]) if isinstance(qty["value"], float)
              else str(qty["value"]))
        unit = str(qty.get("code") or qty.get("unit") or "1")
        rel = el(result, "entryRelationship", typeCode="COMP")
        unit_obs = el(rel, "observation", classCode="OBS", moodCode="EVN")
        H.de_code(unit_obs, C.DE_UNIT, "检查定量结果计量单位")
        H.st_value(unit_obs, unit)
    elif "valueString" in obs or "valueCodeableConcept" in obs:
        result = el(el(org, "component"), "observation", classCode="OBS", moodCode="EVN")
        H.de_code(result, C.DE_RESULT, "检查结果")
        if "valueString" in obs:
            H.st_value(result, str(obs["valueString"]))
        else:
            concept = obs["valueCodeableConcept"]
            H.code_el(result, "value", H.coding_of(concept), concept.get("text"),
                      xsi_type="CD")


def report_document(sources: ReportSources, version: H.DocumentVersion,
                    now: datetime) -> bytes:
    """The WS/T 500.6 document (UTF-8 bytes). ``MappingError`` names the FHIR element that
    is missing when a required part cannot be made."""
    report, patient = sources.report, sources.patient
    if report.get("status") not in FINAL:
        raise MappingError(f"a 检查报告 is made from a final report, not a "
                           f"{report.get('status')!r} one", "DiagnosticReport.status")
    if sources.organization is None:
        raise MappingError("no reporting organisation: the report's performer, the request's "
                           "performer or the patient's managingOrganization must name one "
                           "(the custodian is required)", "DiagnosticReport.performer")
    author = sources.author or sources.verifier
    if author is None:
        raise MappingError("no Practitioner wrote or signed the report (resultsInterpreter or "
                           "performer)", "DiagnosticReport.performer")
    verifier = sources.verifier or author
    conclusion = str(report.get("conclusion") or "").strip()
    if not conclusion:
        raise MappingError("the report has no conclusion (主观提示)", "DiagnosticReport.conclusion")
    issued = H.cda_ts(report.get("issued")) or H.cda_ts(report.get("effectiveDateTime"))
    effective = H.cda_ts(report.get("effectiveDateTime")) or issued
    root = H.new_document()
    H.document_head(root, template=C.REPORT_TEMPLATE, code=C.REPORT_CODE, title=C.REPORT_TITLE,
                    version=version, now=now)
    H.record_target(root, patient, _role_ids(sources),
                    report.get("effectiveDateTime") or report.get("issued"))
    H.author(root, author, issued)
    H.custodian(root, sources.organization)
    H.signer(root, "legalAuthenticator", verifier, "审核医师", issued)
    if author is not verifier and author.get("id") != verifier.get("id"):
        H.signer(root, "authenticator", author, "检查医师", issued)
    H.related_document(root, version)
    H.encounter(root, effective, sources.organization, sources.department)

    body = el(el(root, "component"), "structuredBody")
    diagnoses = [c for cc in report.get("conclusionCode") or [] for c in cc.get("coding") or []
                 if c.get("system") in C.ICD10_SYSTEMS and c.get("code")]
    sec = H.section(body, (C.SEC_DIAGNOSIS, "Diagnosis"), "诊断记录",
                    [f"{c['code']} {c.get('display', '')}".strip() for c in diagnoses]
                    or [conclusion])
    for coding in diagnoses or [None]:
        obs = H.entry_observation(sec, C.DE_DIAGNOSIS, "西医诊断编码")
        if effective:
            el(obs, "effectiveTime", value=effective)
        value = el(obs, "value", code=coding["code"] if coding else None,
                   codeSystem=C.ICD10_CN if coding else None,
                   codeSystemName="诊断代码表(ICD-10)" if coding else None,
                   displayName=coding.get("display") if coding else None,
                   nullFlavor=None if coding else "NI")
        value.set("{http://www.w3.org/2001/XMLSchema-instance}type", "CD")

    reasons = [t for t in (H.concept_text(r) for r in (sources.request or {}).get(
        "reasonCode") or []) if t]
    if reasons:
        sec = H.section(body, (C.SEC_SYMPTOM, "Symptom"), "症状", reasons)
        for reason in reasons:
            H.st_value(H.entry_observation(sec, C.DE_SYMPTOM, "症状描述"), reason)

    measurements = [o for o in sources.observations if not is_findings(o)]
    method = H.concept_text(report.get("code")) or "超声检查"
    sec = H.section(body, (C.SEC_EXAM, "Physical examination"), "体格检查",
                    [f"检查方法：{method}"] + [_quantity_text(o) for o in measurements])  # noqa: RUF001
    H.st_value(H.entry_observation(sec, C.DE_METHOD, "检查方法名称"), method)
    category = H.coding_of(next(iter(report.get("category") or []), None))
    H.st_value(H.entry_observation(sec, C.DE_CATEGORY, "检查类别"),
               "超声" if category and category.get("code") == "RUS" else
               (H.concept_text(next(iter(report.get("category") or []), None)) or "超声"))
    report_code = H.coding_of(report.get("code"), ("http://loinc.org",))
    if report_code is not None:
        exam = H.entry_observation(sec, C.DE_ITEM, "检查项目代码")
        H.code_el(exam, "value", report_code, (report.get("code") or {}).get("text"),
                  xsi_type="CD")
    for obs in measurements:
        _measurement(sec, obs, effective)

    findings = findings_text(sources) or conclusion
    department = H.org_name(sources.department) if sources.department else None
    institution = H.org_name(sources.organization)
    sec = H.section(body, None, C.SEC_REPORT, [f"检查所见：{findings}", f"检查提示：{conclusion}"])  # noqa: RUF001
    H.st_value(H.entry_observation(sec, C.DE_FINDINGS, "检查报告结果-客观所见"), findings)
    H.st_value(H.entry_observation(sec, C.DE_IMPRESSION, "检查报告结果-主观提示"), conclusion)
    if department:
        H.st_value(H.entry_observation(sec, C.DE_DEPARTMENT, "检查报告科室"), department)
    H.st_value(H.entry_observation(sec, C.DE_INSTITUTION, "检查报告机构名称"), institution)
    return H.serialize(root)
