"""The guide's own definitions: the profiles (as differentials), their code systems and value
sets, and one example per profile with the resources it points at.

The profiles follow ``STANDARDS.md`` §7 (remote consultation: WS/T 529/545, WS/T 500.45 states
mapped to ``Task.status`` + ``businessStatus``) and §8 (ultrasound reports from DICOM SR,
critical values 超声危急值). Names are the ones ``ARCHITECTURE.md`` fixes.
"""

from __future__ import annotations

from typing import Any

from sonobridge.conformance.ig import domains
from sonobridge.conformance.ig.common import CANONICAL as CANONICAL  # re-exported: the guide's
from sonobridge.conformance.ig.common import DATE as DATE  # base and publication data
from sonobridge.conformance.ig.common import PUBLISHER as PUBLISHER
from sonobridge.conformance.ig.common import common as _common
from sonobridge.conformance.ig.common import invariant as _invariant
from sonobridge.conformance.ig.common import url

PACKAGE_NAME = "sonobridge.fhir.ig"
IG_ID = "sonobridge"

V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"


# ---------------------------------------------------------------------- code systems, value sets

# (code, 中文, English)
BUSINESS_STATUS = [
    ("draft", "草稿", "Draft"),
    ("pending-local-review", "待本院审核", "Awaiting the requesting hospital's review"),
    ("returned-by-local", "本院退回", "Returned by the requesting hospital"),
    ("pending-acceptance", "待受理", "Awaiting acceptance"),
    ("accepted", "已受理", "Accepted"),
    ("triage", "分诊中", "Choosing the expert"),
    ("scheduled", "已排期", "Scheduled"),
    ("in-consultation", "会诊中", "In consultation"),
    ("report-pending-review", "报告待审核", "Report awaiting review"),
    ("completed", "已完成", "Completed (report final)"),
    ("feedback-given", "已反馈", "Requester's feedback given"),
    ("refused", "拒收", "Refused by the consulting side"),
    ("cancelled", "已取消", "Cancelled"),
]
CONSULTATION_TYPE = [
    ("written", "图文会诊", "Written (asynchronous) consultation"),
    ("video", "视频会诊", "Video (live) consultation"),
    ("imaging", "远程影像诊断", "Remote imaging diagnosis"),
]
CONSULTATION_CATEGORY = [
    ("remote-ultrasound", "远程超声会诊", "Remote ultrasound consultation"),
]
# 会诊目的 (WS/T 500.45 DE06.00.214.00): what the requester wants from the consultation.
CONSULTATION_PURPOSE = [
    ("confirm-diagnosis", "明确诊断", "Confirm or establish the diagnosis"),
    ("second-opinion", "报告复核", "Second reading of a report"),
    ("treatment-advice", "治疗方案建议", "Advice on treatment or management"),
    ("difficult-case", "疑难病例讨论", "Discussion of a difficult case"),
    ("referral-assessment", "转诊评估", "Assessment for referral (双向转诊)"),
]
CRITICAL_FINDING = [
    ("organ-rupture", "肝脾肾破裂出血", "Suspected rupture or bleeding of liver, spleen or kidney"),
    ("ectopic-rupture", "异位妊娠破裂并腹腔内出血",
     "Ruptured ectopic pregnancy with intra-abdominal bleeding"),
    ("cholecystitis", "急性化脓性或穿孔性胆囊炎", "Acute suppurative or perforated cholecystitis"),
    ("oligohydramnios-fhr", "晚孕期羊水过少并胎心异常",
     "Late-pregnancy oligohydramnios with fetal heart rate > 160 or < 110/min"),
    ("uterine-rupture", "子宫破裂", "Uterine rupture"),
    ("placental-abruption", "胎盘早剥或前置胎盘活动性出血",
     "Placental abruption, or placenta previa with active bleeding"),
    ("lvef-low", "首次发现左室射血分数 < 35%", "First finding of LVEF < 35 %"),
    ("tamponade", "心包积液合并心脏压塞", "Pericardial effusion with tamponade"),
    ("aortic-dissection", "主动脉夹层", "Aortic dissection"),
    ("aneurysm-rupture", "主动脉瘤破裂", "Ruptured aortic aneurysm"),
    ("cardiac-rupture", "心脏破裂", "Cardiac rupture"),
    ("floating-thrombus", "心腔内游离血栓", "Free-floating intracardiac thrombus"),
    ("limb-embolism", "急性肢体动脉栓塞", "Acute limb arterial embolism"),
    ("stuck-valve", "人工瓣膜卡瓣", "Stuck prosthetic valve"),
]


def _code_system(rid: str, name: str, title: str, description: str,
                 concepts: list[tuple[str, str, str]]) -> dict[str, Any]:
    cs = _common("CodeSystem", rid, name, title, description)
    cs.update({"language": "zh-CN", "caseSensitive": True, "valueSet": url("ValueSet", rid),
               "content": "complete", "count": len(concepts), "concept": [
                   {"code": code, "display": zh, "definition": en,
                    "designation": [{"language": "en", "value": en}]}
                   for code, zh, en in concepts]})
    return cs


def _value_set(rid: str, name: str, title: str, description: str) -> dict[str, Any]:
    vs = _common("ValueSet", rid, name, title, description)
    vs["compose"] = {"include": [{"system": url("CodeSystem", rid)}]}
    return vs


TERMINOLOGY = [
    ("sono-consultation-business-status", "SonoConsultationBusinessStatus",
     "会诊业务状态 Consultation business status",
     "The states of a remote consultation seen in Chinese implementations (WS/T 529/545), "
     "carried in Task.businessStatus beside the R4 Task.status.", BUSINESS_STATUS),
    ("sono-consultation-type", "SonoConsultationType", "会诊类型 Consultation type",
     "Written (图文), video (视频) consultation and remote imaging diagnosis (WS/T 529).",
     CONSULTATION_TYPE),
    ("sono-consultation-category", "SonoConsultationCategory",
     "会诊类别 Consultation category",
     "The category a consultation request carries in ServiceRequest.category, so that a "
     "search by category finds every remote ultrasound consultation.", CONSULTATION_CATEGORY),
    ("sono-consultation-purpose", "SonoConsultationPurpose", "会诊目的 Consultation purpose",
     "What the requester wants from the consultation (WS/T 500.45 会诊目的 DE06.00.214.00).",
     CONSULTATION_PURPOSE),
    ("sono-critical-finding", "SonoCriticalFinding", "超声危急值 Ultrasound critical findings",
     "The 14 ultrasound critical values of the 2022 quality-control indicators (US-CV-01).",
     CRITICAL_FINDING),
    *domains.TERMINOLOGY,  # the other domains' code systems (domains.py)
]


def code_systems() -> list[dict[str, Any]]:
    return [_code_system(rid, name, title, desc, concepts)
            for rid, name, title, desc, concepts in TERMINOLOGY]


def value_sets() -> list[dict[str, Any]]:
    return [_value_set(rid, name, title, desc) for rid, name, title, desc, _ in TERMINOLOGY]


def concept_codes(rid: str) -> set[str]:
    for cs_id, _, _, _, concepts in TERMINOLOGY:
        if cs_id == rid:
            return {c for c, _, _ in concepts}
    raise KeyError(rid)


# ---------------------------------------------------------------------- profiles (differentials)

def _el(path: str, **constraints: Any) -> dict[str, Any]:
    return {"id": path, "path": path, **constraints}


def _ref(*targets: str) -> list[dict[str, Any]]:
    return [{"code": "Reference",
             "targetProfile": [f"http://hl7.org/fhir/StructureDefinition/{t}" for t in targets]}]


def _bind(rid: str, strength: str = "required") -> dict[str, Any]:
    return {"strength": strength, "valueSet": url("ValueSet", rid)}


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


# (business status code -> the Task.status it goes with: STANDARDS.md §7's table)
TASK_STATUS_OF = {
    "draft": "draft", "pending-local-review": "requested", "returned-by-local": "rejected",
    "pending-acceptance": "received", "accepted": "accepted", "triage": "accepted",
    "scheduled": "ready", "in-consultation": "in-progress",
    "report-pending-review": "in-progress", "completed": "completed",
    "feedback-given": "completed", "refused": "rejected", "cancelled": "cancelled",
}


def _state_invariant() -> str:
    system = url("CodeSystem", "sono-consultation-business-status")
    return " and ".join(
        f"(businessStatus.coding.where(system = '{system}' and code = '{code}').exists() "
        f"implies status = '{status}')" for code, status in TASK_STATUS_OF.items())


EXT_CONSULTATION_TYPE = url("StructureDefinition", "sono-consultation-type")
EXT_CONSULTATION_PURPOSE = url("StructureDefinition", "sono-consultation-purpose")

# Extensions: (id, name, title, description, context types, value type, value set, strength)
EXTENSIONS: list[dict[str, Any]] = [
    {"id": "sono-consultation-type", "name": "SonoConsultationTypeExtension",
     "title": "会诊类型 Consultation type",
     "description": "Written (图文会诊) or video (视频会诊) consultation, or remote imaging "
                    "diagnosis (WS/T 500.45 会诊类型 DE06.00.319.00).",
     "context": ["ServiceRequest", "Appointment"], "value": "Coding",
     "binding": _bind("sono-consultation-type")},
    {"id": "sono-consultation-purpose", "name": "SonoConsultationPurposeExtension",
     "title": "会诊目的 Consultation purpose",
     "description": "What the requester wants from the consultation (WS/T 500.45 会诊目的 "
                    "DE06.00.214.00): a code of the guide, or text.",
     "context": ["ServiceRequest"], "value": "CodeableConcept",
     "binding": _bind("sono-consultation-purpose", "extensible")},
    *domains.EXTENSIONS,  # the other domains' simple extensions (domains.py)
]


def _extension_slice(base: str, slice_name: str, ext_url: str, low: int, high: str,
                     short: str) -> dict[str, Any]:
    return {"id": f"{base}:{slice_name}", "path": base, "sliceName": slice_name,
            "short": short, "min": low, "max": high,
            "type": [{"code": "Extension", "profile": [ext_url]}], "mustSupport": True}


def _extension_slicing(base: str) -> dict[str, Any]:
    return _el(base, slicing={"discriminator": [{"type": "value", "path": "url"}],
                              "ordered": False, "rules": "open"})


# Patterns carry system and code only: a client need not send (or match) a display.
CONSULTATION_CATEGORY_CC = _cc(url("CodeSystem", "sono-consultation-category"),
                               "remote-ultrasound")
_TYPE_SYSTEM = url("CodeSystem", "sono-consultation-type")

CONSULTATION_PROFILES: list[dict[str, Any]] = [
    {"id": "sono-consultation-request", "name": "SonoConsultationRequest", "type": "ServiceRequest",
     "title": "会诊申请 Consultation request",
     "description": "A request for a remote ultrasound consultation (WS/T 500.45 会诊记录): the "
                    "patient, the requesting doctor (clinic) and the consulting institution or "
                    "experts, the reason, the consultation type (图文/视频) and purpose as "
                    "extensions, the requested time window and the studies or reports to look "
                    "at.",
     "differential": [
         _el("ServiceRequest", constraint=[
             _invariant("sono-req-1", "A video consultation gives the requested time window "
                        "(occurrence) 视频会诊需给出期望时间",
                        f"extension.where(url = '{EXT_CONSULTATION_TYPE}').value.code = "
                        "'video' implies occurrence.exists()"),
             _invariant("sono-req-2", "The reason is given, coded or as a reference "
                        "会诊原因必填", "reasonCode.exists() or reasonReference.exists()")]),
         _extension_slicing("ServiceRequest.extension"),
         _extension_slice("ServiceRequest.extension", "consultationType",
                          EXT_CONSULTATION_TYPE, 1, "1", "会诊类型 Consultation type"),
         _extension_slice("ServiceRequest.extension", "consultationPurpose",
                          EXT_CONSULTATION_PURPOSE, 0, "1", "会诊目的 Consultation purpose"),
         _el("ServiceRequest.identifier", min=1, short="电子申请单编号 Request number",
             mustSupport=True),
         _el("ServiceRequest.intent", patternCode="order"),
         _el("ServiceRequest.category", min=1, short="类别 Category",
             slicing={"discriminator": [{"type": "pattern", "path": "$this"}],
                      "ordered": False, "rules": "open"}, mustSupport=True),
         {"id": "ServiceRequest.category:remoteUltrasound", "path": "ServiceRequest.category",
          "sliceName": "remoteUltrasound", "short": "远程超声会诊 Remote ultrasound "
          "consultation", "min": 1, "max": "1",
          "patternCodeableConcept": CONSULTATION_CATEGORY_CC, "mustSupport": True},
         _el("ServiceRequest.priority", mustSupport=True,
             short="routine | urgent | asap | stat (deadlines follow it)"),
         _el("ServiceRequest.code", min=1, short="检查/会诊项目 What is asked for",
             mustSupport=True),
         _el("ServiceRequest.subject", type=_ref("Patient"), mustSupport=True),
         _el("ServiceRequest.occurrence[x]", type=[{"code": "Period"}],
             short="期望会诊时间 Requested time window", mustSupport=True),
         _el("ServiceRequest.authoredOn", min=1, mustSupport=True),
         _el("ServiceRequest.requester", min=1, short="会诊申请医师 Requesting doctor "
             "(PractitionerRole of the clinic)",
             type=_ref("PractitionerRole", "Practitioner"), mustSupport=True),
         _el("ServiceRequest.performer", short="会诊机构/专家 Consulting institution or experts",
             type=_ref("Organization", "PractitionerRole", "Practitioner"), mustSupport=True),
         _el("ServiceRequest.reasonCode", short="会诊原因 Reason (coded or text)",
             mustSupport=True),
         _el("ServiceRequest.reasonReference", short="会诊原因 Reason (a condition, finding)",
             mustSupport=True),
         _el("ServiceRequest.supportingInfo", short="辅助检查 Studies and reports to review",
             type=_ref("ImagingStudy", "DocumentReference", "DiagnosticReport", "Observation"),
             mustSupport=True),
     ]},
    {"id": "sono-consultation-task", "name": "SonoConsultationTask", "type": "Task",
     "title": "会诊流程 Consultation task",
     "description": "The workflow of one consultation: Task.status with the Chinese business "
                    "state in Task.businessStatus (STANDARDS §7; the two must agree), focus "
                    "(or basedOn) the request, for the patient, owner the expert, output the "
                    "report, note the messages.",
     "differential": [
         _el("Task", constraint=[
             _invariant("sono-task-1", "businessStatus goes with Task.status as the state "
                        "table says 业务状态与 Task.status 一致", _state_invariant()),
             _invariant("sono-task-2", "The Task works on the consultation request (focus or "
                        "basedOn) 需指向会诊申请", "focus.exists() or basedOn.exists()")]),
         _el("Task.basedOn", type=_ref("ServiceRequest"), mustSupport=True),
         _el("Task.businessStatus", min=1, short="会诊业务状态 Business state",
             binding=_bind("sono-consultation-business-status"), mustSupport=True),
         _el("Task.intent", patternCode="order"),
         _el("Task.focus", short="会诊申请 The consultation request",
             type=_ref("ServiceRequest"), mustSupport=True),
         _el("Task.for", min=1, type=_ref("Patient"), mustSupport=True),
         _el("Task.authoredOn", min=1),
         _el("Task.requester", min=1, mustSupport=True),
         _el("Task.owner", short="会诊专家 Consulting expert or institution",
             type=_ref("Practitioner", "PractitionerRole", "Organization"), mustSupport=True),
         _el("Task.note", short="留言 Messages between the two sides", mustSupport=True),
         _el("Task.output", short="会诊报告 The consultation report", mustSupport=True),
     ]},
    {"id": "sono-consultation-appointment", "name": "SonoConsultationAppointment",
     "type": "Appointment", "title": "会诊预约 Consultation appointment",
     "description": "A scheduled consultation (已排期): a live video session, or the reading "
                    "slot an expert books for a written consultation (图文会诊). The request "
                    "it serves, start and end, the expert's Slot; a video session names both "
                    "sides as participants.",
     "differential": [
         _el("Appointment", constraint=[
             _invariant("sono-appt-1", "The session ends after it starts 结束时间晚于开始时间",
                        "(start.exists() and end.exists()) implies end > start"),
             _invariant("sono-appt-2", "The service type says video or written consultation "
                        "服务类型为视频会诊或图文会诊",
                        f"serviceType.coding.where(system = '{_TYPE_SYSTEM}' and "
                        "(code = 'video' or code = 'written')).exists()"),
             _invariant("sono-appt-3", "A video session has both sides as participants "
                        "视频会诊需双方参与",
                        f"serviceType.coding.where(system = '{_TYPE_SYSTEM}' and "
                        "code = 'video').exists() implies participant.count() >= 2")]),
         _el("Appointment.basedOn", min=1, type=_ref("ServiceRequest"), mustSupport=True),
         _el("Appointment.serviceType", min=1,
             slicing={"discriminator": [{"type": "pattern", "path": "$this"}],
                      "ordered": False, "rules": "open"}),
         {"id": "Appointment.serviceType:video", "path": "Appointment.serviceType",
          "sliceName": "video", "short": "视频会诊 Video consultation", "min": 0, "max": "1",
          "patternCodeableConcept": _cc(_TYPE_SYSTEM, "video"), "mustSupport": True},
         {"id": "Appointment.serviceType:written", "path": "Appointment.serviceType",
          "sliceName": "written", "short": "图文会诊阅片时段 Written consultation (reading "
          "slot)", "min": 0, "max": "1",
          "patternCodeableConcept": _cc(_TYPE_SYSTEM, "written"), "mustSupport": True},
         _el("Appointment.slot", type=_ref("Slot"), short="专家号源 The expert's slot",
             mustSupport=True),
         _el("Appointment.start", min=1, mustSupport=True),
         _el("Appointment.end", min=1, mustSupport=True),
         _el("Appointment.participant", min=1,
             short="会诊方, 视频会诊另含申请方: The expert (and, for video, the requester)"),
     ]},
]


PROFILES: list[dict[str, Any]] = [
    *CONSULTATION_PROFILES,
    {"id": "sono-ultrasound-report", "name": "SonoUltrasoundReport", "type": "DiagnosticReport",
     "title": "超声报告 Ultrasound report",
     "description": "An ultrasound diagnostic report: category radiology ultrasound (v2-0074 "
                    "RUS), the studies it reads, one Observation per measurement, the "
                    "conclusion (超声提示) and optionally the signed PDF.",
     "differential": [
         _el("DiagnosticReport.category", min=1,
             patternCodeableConcept=_cc(V2_0074, "RUS")),
         _el("DiagnosticReport.subject", min=1, type=_ref("Patient"), mustSupport=True),
         _el("DiagnosticReport.effective[x]", min=1, type=[{"code": "dateTime"}]),
         _el("DiagnosticReport.issued", mustSupport=True),
         _el("DiagnosticReport.performer", min=1, mustSupport=True),
         _el("DiagnosticReport.result", type=_ref("Observation"), mustSupport=True),
         _el("DiagnosticReport.imagingStudy", min=1, mustSupport=True),
         _el("DiagnosticReport.conclusion", min=1, short="超声提示 Conclusion",
             mustSupport=True),
         _el("DiagnosticReport.presentedForm", mustSupport=True),
     ]},
    {"id": "sono-ultrasound-observation", "name": "SonoUltrasoundObservation",
     "type": "Observation", "title": "超声测量 Ultrasound measurement",
     "description": "One measurement from an ultrasound SR (TID 1500/5000/5100/5200, HL7 DICOM "
                    "SR to FHIR mapping): category imaging, a LOINC/DCM/SNOMED code, a UCUM "
                    "quantity, derived from the ImagingStudy.",
     "differential": [
         _el("Observation.category", min=1,
             patternCodeableConcept=_cc(OBS_CATEGORY, "imaging")),
         _el("Observation.subject", min=1, type=_ref("Patient"), mustSupport=True),
         _el("Observation.value[x]", type=[{"code": "Quantity"}, {"code": "CodeableConcept"},
                                          {"code": "string"}], mustSupport=True),
         _el("Observation.bodySite", mustSupport=True, short="测量部位 Finding site"),
         _el("Observation.derivedFrom", min=1, type=_ref("ImagingStudy", "DocumentReference",
                                                        "Observation", "Media"),
             mustSupport=True),
     ]},
    {"id": "sono-critical-value-communication", "name": "SonoCriticalValueCommunication",
     "type": "Communication", "title": "危急值通知 Critical value notification",
     "description": "The notification of an ultrasound critical value (US-CV-01: within 10 "
                    "minutes of the report), sent to the responsible clinician and "
                    "acknowledged (status completed).",
     "differential": [
         _el("Communication.category", min=1,
             patternCodeableConcept=_cc("http://terminology.hl7.org/CodeSystem/"
                                        "communication-category", "alert")),
         _el("Communication.priority", min=1, patternCode="stat"),
         _el("Communication.subject", min=1, type=_ref("Patient"), mustSupport=True),
         _el("Communication.about", min=1, type=_ref("DiagnosticReport", "Observation"),
             mustSupport=True),
         _el("Communication.sent", min=1, mustSupport=True),
         _el("Communication.recipient", min=1, mustSupport=True),
         _el("Communication.reasonCode", min=1, short="危急值 Critical finding",
             binding=_bind("sono-critical-finding"), mustSupport=True),
     ]},
    domains.TEACHING_PROFILE,
]


# ---------------------------------------------------------------------- examples

def _meta(profile_id: str) -> dict[str, Any]:
    return {"profile": [url("StructureDefinition", profile_id)]}


def examples() -> list[dict[str, Any]]:
    """Examples: one per profile (claiming it in meta.profile) and what they refer to."""
    patient = {"resourceType": "Patient", "id": "example-patient",
               "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "example-0001"}],
               "name": [{"text": "张三", "family": "张", "given": ["三"]}],
               "gender": "female", "birthDate": "1990-05-01"}
    clinic = {"resourceType": "Organization", "id": "example-clinic",
              "name": "示例乡镇卫生院 Example township clinic"}
    hospital = {"resourceType": "Organization", "id": "example-hospital",
                "name": "示例县人民医院 Example county hospital"}
    gp = {"resourceType": "Practitioner", "id": "example-gp",
          "name": [{"text": "李医生", "family": "李"}]}
    expert = {"resourceType": "Practitioner", "id": "example-expert",
              "name": [{"text": "王主任", "family": "王"}]}
    study = {"resourceType": "ImagingStudy", "id": "example-study", "status": "available",
             "identifier": [{"system": "urn:dicom:uid",
                             "value": "urn:oid:1.2.826.0.1.3680043.10.1.1"}],
             "subject": {"reference": "Patient/example-patient"},
             "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                           "code": "US"}],
             "numberOfSeries": 1, "numberOfInstances": 1}
    consult_type = url("CodeSystem", "sono-consultation-type")
    request = {
        "resourceType": "ServiceRequest", "id": "example-consultation-request",
        "meta": _meta("sono-consultation-request"),
        "identifier": [{"system": "urn:sonobridge:consultation", "value": "HZ-2026-0001"}],
        "extension": [
            {"url": EXT_CONSULTATION_TYPE, "valueCoding": {
                "system": consult_type, "code": "written", "display": "图文会诊"}},
            {"url": EXT_CONSULTATION_PURPOSE, "valueCodeableConcept": _cc(
                url("CodeSystem", "sono-consultation-purpose"), "confirm-diagnosis",
                "明确诊断")}],
        "status": "active", "intent": "order", "priority": "routine",
        "category": [_cc(url("CodeSystem", "sono-consultation-category"),
                         "remote-ultrasound", "远程超声会诊")],
        "code": {"text": "远程超声会诊 Remote ultrasound consultation"},
        "subject": {"reference": "Patient/example-patient"},
        "authoredOn": "2026-12-01T09:30:00+08:00",
        "requester": {"reference": "Practitioner/example-gp"},
        "performer": [{"reference": "Organization/example-hospital"}],
        "reasonCode": [{"text": "肝内占位性质待定 Liver lesion of uncertain nature"}],
        "supportingInfo": [{"reference": "ImagingStudy/example-study"}],
    }
    task = {
        "resourceType": "Task", "id": "example-consultation-task",
        "meta": _meta("sono-consultation-task"),
        "basedOn": [{"reference": "ServiceRequest/example-consultation-request"}],
        "focus": {"reference": "ServiceRequest/example-consultation-request"},
        "status": "accepted",
        "businessStatus": _cc(url("CodeSystem", "sono-consultation-business-status"),
                              "accepted", "已受理"),
        "intent": "order", "for": {"reference": "Patient/example-patient"},
        "authoredOn": "2026-12-01T09:30:00+08:00",
        "requester": {"reference": "Practitioner/example-gp"},
        "owner": {"reference": "Organization/example-hospital"},
    }
    appointment = {
        "resourceType": "Appointment", "id": "example-consultation-appointment",
        "meta": _meta("sono-consultation-appointment"), "status": "booked",
        "basedOn": [{"reference": "ServiceRequest/example-consultation-request"}],
        "serviceType": [_cc(consult_type, "video", "视频会诊")],
        "start": "2026-12-02T14:00:00+08:00", "end": "2026-12-02T14:30:00+08:00",
        "participant": [
            {"actor": {"reference": "Practitioner/example-gp"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/example-expert"}, "status": "accepted"}],
    }
    observation = {
        "resourceType": "Observation", "id": "example-liver-lesion-size",
        "meta": _meta("sono-ultrasound-observation"), "status": "final",
        "category": [_cc(OBS_CATEGORY, "imaging", "Imaging")],
        "code": {"coding": [{"system": SCT, "code": "246120007", "display": "Nodule size"}],
                 "text": "病灶大小 Lesion size"},
        "subject": {"reference": "Patient/example-patient"},
        "effectiveDateTime": "2026-12-01T09:10:00+08:00",
        "valueQuantity": {"value": 23, "unit": "mm", "system": UCUM, "code": "mm"},
        "bodySite": {"coding": [{"system": SCT, "code": "10200004", "display": "Liver"}]},
        "derivedFrom": [{"reference": "ImagingStudy/example-study"}],
    }
    report = {
        "resourceType": "DiagnosticReport", "id": "example-ultrasound-report",
        "meta": _meta("sono-ultrasound-report"), "status": "final",
        "category": [_cc(V2_0074, "RUS", "Radiology Ultrasound")],
        "code": {"coding": [{"system": LOINC, "code": "24558-9",
                             "display": "US Abdomen"}], "text": "腹部超声 Abdominal ultrasound"},
        "subject": {"reference": "Patient/example-patient"},
        "effectiveDateTime": "2026-12-01T09:10:00+08:00",
        "issued": "2026-12-01T10:05:00+08:00",
        "performer": [{"reference": "Practitioner/example-expert"}],
        "result": [{"reference": "Observation/example-liver-lesion-size"}],
        "imagingStudy": [{"reference": "ImagingStudy/example-study"}],
        "conclusion": "肝右叶实性结节，建议增强CT。Solid nodule in the right lobe of the liver; "  # noqa: RUF001
                      "contrast CT advised.",
    }
    communication = {
        "resourceType": "Communication", "id": "example-critical-value",
        "meta": _meta("sono-critical-value-communication"), "status": "completed",
        "category": [_cc("http://terminology.hl7.org/CodeSystem/communication-category",
                         "alert")],
        "priority": "stat", "subject": {"reference": "Patient/example-patient"},
        "about": [{"reference": "DiagnosticReport/example-ultrasound-report"}],
        "sent": "2026-12-01T10:08:00+08:00", "received": "2026-12-01T10:11:00+08:00",
        "recipient": [{"reference": "Practitioner/example-gp"}],
        "sender": {"reference": "Practitioner/example-expert"},
        "reasonCode": [_cc(url("CodeSystem", "sono-critical-finding"), "organ-rupture",
                           "肝脾肾破裂出血")],
        "payload": [{"contentString": "疑似脾破裂出血，请立即处理。Suspected splenic rupture "  # noqa: RUF001
                                      "with bleeding: act now."}],
    }
    return [patient, clinic, hospital, gp, expert, study, request, task, appointment,
            observation, report, communication, domains.teaching_example()]
