"""WS/T 500.45 会诊记录 from a completed consultation Task (STANDARDS.md §7).

Header as in every WS/T 500 document: the patient (身份证号, 住院号), 电子申请单编号 = the
consultation request's identifier; ``author`` and ``legalAuthenticator`` = 会诊医师 (the
practitioner who answered), ``authenticator`` = 会诊申请医师 (the requester), ``custodian`` =
the consulting institution, ``componentOf`` the requesting institution's location.
Body: 诊断记录 (29548-5: ICD-10 西医诊断 from the request's reasons), 病历摘要 (11329-0,
DE06.00.182.00: the request's notes), 辅助检查 (30954-2, DE04.30.009.00: the ultrasound
report's conclusion), and the 会诊 section (会诊类型 DE06.00.319.00, 会诊原因 DE06.00.039.00,
会诊目的 DE06.00.214.00, 会诊意见 DE06.00.018.00: the report's conclusion or the Task's
output).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda import header as H
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.xml import el


@dataclass
class ConsultationSources:
    task: dict[str, Any]
    request: dict[str, Any]
    patient: dict[str, Any]
    consultant: dict[str, Any] | None  # 会诊医师
    requester: dict[str, Any] | None  # 会诊申请医师
    consulting_org: dict[str, Any] | None  # 会诊机构 (custodian)
    requesting_org: dict[str, Any] | None = None  # 申请机构
    report: dict[str, Any] | None = None  # the consultation's ultrasound report


def _texts(values: list[Any] | None) -> list[str]:
    return [t for t in (H.concept_text(v) for v in values or []) if t]


def _opinion(sources: ConsultationSources) -> str | None:
    if sources.report and sources.report.get("conclusion"):
        return str(sources.report["conclusion"])
    for output in sources.task.get("output") or []:
        if output.get("valueString"):
            return str(output["valueString"])
    return None


def consultation_document(sources: ConsultationSources, version: H.DocumentVersion,
                          now: datetime) -> bytes:
    task, request, patient = sources.task, sources.request, sources.patient
    if task.get("status") != "completed":
        raise MappingError(f"a 会诊记录 is made from a completed consultation, not a "
                           f"{task.get('status')!r} one", "Task.status")
    if sources.consultant is None:
        raise MappingError("no consulting practitioner (Task.owner or the report's performer)",
                           "Task.owner")
    if sources.consulting_org is None:
        raise MappingError("no consulting institution (the request's performer)",
                           "ServiceRequest.performer")
    opinion = _opinion(sources)
    if not opinion:
        raise MappingError("no 会诊意见: the consultation report's conclusion or a Task "
                           "output valueString is required", "Task.output")
    reasons = _texts(request.get("reasonCode"))
    notes = [str(n["text"]) for n in request.get("note") or [] if n.get("text")]
    ended = H.cda_ts((task.get("executionPeriod") or {}).get("end")) or \
        H.cda_ts(task.get("lastModified")) or H.cda_ts(task.get("authoredOn"))
    root = H.new_document()
    H.document_head(root, template=C.CONSULT_TEMPLATE, code=C.CONSULT_CODE,
                    title=C.CONSULT_TITLE, version=version, now=now)
    ids = [(C.INPATIENT_NO, v) for v in [H.identifier(patient, C.INPATIENT_NO)] if v]
    ids.append((C.ORDER_NO, H.any_identifier(request, C.ORDER_NO)))
    H.record_target(root, patient, ids, task.get("authoredOn"))
    H.author(root, sources.consultant, ended)
    H.custodian(root, sources.consulting_org)
    H.signer(root, "legalAuthenticator", sources.consultant, "会诊医师", ended)
    if sources.requester is not None:
        H.signer(root, "authenticator", sources.requester, "会诊申请医师",
                 H.cda_ts(request.get("authoredOn")))
    H.related_document(root, version)
    H.encounter(root, H.cda_ts(request.get("authoredOn")) or ended,
                sources.requesting_org or sources.consulting_org, None)

    body = el(el(root, "component"), "structuredBody")
    diagnoses = [c for cc in request.get("reasonCode") or [] for c in cc.get("coding") or []
                 if c.get("system") in C.ICD10_SYSTEMS and c.get("code")]
    if diagnoses:
        sec = H.section(body, (C.SEC_DIAGNOSIS, "Diagnosis"), "诊断记录",
                        [f"{c['code']} {c.get('display', '')}".strip() for c in diagnoses])
        for coding in diagnoses:
            obs = H.entry_observation(sec, C.DE_DIAGNOSIS, "西医诊断编码")
            value = el(obs, "value", code=coding["code"], codeSystem=C.ICD10_CN,
                       codeSystemName="诊断代码表(ICD-10)", displayName=coding.get("display"))
            value.set("{http://www.w3.org/2001/XMLSchema-instance}type", "CD")
    summary = notes or reasons or ["-"]
    sec = H.section(body, ("11329-0", "History general"), "病历摘要", summary)
    H.st_value(H.entry_observation(sec, C.DE_SUMMARY, "病历摘要"), "\n".join(summary))
    if sources.report is not None:
        aux = str(sources.report.get("conclusion") or "")
        sec = H.section(body, ("30954-2", "Relevant diagnostic tests"), "辅助检查", [aux])
        H.st_value(H.entry_observation(sec, C.DE_AUX_RESULTS, "辅助检查结果"), aux)
    kind = H.concept_text(next(iter(request.get("category") or []), None)) or "远程会诊"
    purpose = notes[0] if notes else (reasons[0] if reasons else str(
        H.concept_text(request.get("code")) or "远程会诊"))
    lines = [f"会诊类型：{kind}", f"会诊目的：{purpose}", f"会诊意见：{opinion}"]  # noqa: RUF001
    sec = H.section(body, None, C.SEC_CONSULT, lines)
    H.st_value(H.entry_observation(sec, C.DE_CONSULT_TYPE, "会诊类型"), kind)
    if reasons:
        H.st_value(H.entry_observation(sec, C.DE_REASON, "会诊原因"), "；".join(reasons))  # noqa: RUF001
    H.st_value(H.entry_observation(sec, C.DE_PURPOSE, "会诊目的"), purpose)
    H.st_value(H.entry_observation(sec, C.DE_OPINION, "会诊意见"), opinion)
    return H.serialize(root)
