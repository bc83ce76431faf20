"""The guide's definitions for the canonicals the domain modules emit: the reports and
critical-value extensions and flags, the QC extensions, questionnaires, measures and views,
the teaching case, the WS/T 500 documents, the consultation's Provenance and overdue marks,
the subscription topics, and an OperationDefinition for each of the guide's own operations.

Where a domain module already holds the resource (the QC Questionnaires, the Measures, the
shipped ViewDefinitions) the guide takes it from there, so the published text and what the
server checks cannot drift apart. Every canonical string under ``http://sonobridge.org/fhir/``
in the package's sources must resolve to a resource here or in ``content.py``
(``tests/conformance/test_ig_canonicals.py``). ``content.py`` takes the profile, extensions,
terminology and example in with its own, so every user of the guide's lists (the build, the
kit's profiles suite) sees them; the other resources are added by ``build.guide``.
"""

from __future__ import annotations

import copy
from typing import Any

from sonobridge import __version__
from sonobridge.conformance.ig.common import DATE, PUBLISHER, url
from sonobridge.conformance.ig.common import common as _common
from sonobridge.conformance.ig.common import invariant as _invariant
from sonobridge.core import qc, teaching
from sonobridge.core.measures.definitions import LIBRARY, MEASURES
from sonobridge.core.subscriptions.topics import TOPICS
from sonobridge.core.views.shipped import SHIPPED
from sonobridge.mappings import sr
from sonobridge.mappings.cda import codes as cda_codes

DCM = "http://dicom.nema.org/resources/ontology/DCM"

# ---------------------------------------------------------------------- simple extensions

# Same shape as content.EXTENSIONS, which takes them in (build.extension_definition writes
# them out).
EXTENSIONS: list[dict[str, Any]] = [
    {"id": "critical-value-sent-after", "name": "CriticalValueSentAfter",
     "title": "危急值通知用时 Critical value sent after",
     "description": "Minutes from the report's issue to the notification being sent "
                    "(US-CV-01 counts it within 10 minutes); written by the server.",
     "context": ["Communication"], "value": "Duration"},
    {"id": "critical-value-acknowledged-after", "name": "CriticalValueAcknowledgedAfter",
     "title": "危急值确认用时 Critical value acknowledged after",
     "description": "Minutes from the notification being sent to the clinician's "
                    "acknowledgement (Communication.received); written by the server.",
     "context": ["Communication"], "value": "Duration"},
    {"id": "critical-value-late", "name": "CriticalValueLate",
     "title": "危急值超时 Critical value late",
     "description": "True when the notification was sent, or acknowledged, later than the "
                    "configured limit; written by the server.",
     "context": ["Communication"], "value": "boolean"},
    {"id": "critical-value-escalated", "name": "CriticalValueEscalated",
     "title": "危急值升级时间 Critical value escalated",
     "description": "When an unacknowledged critical-value notification was escalated to the "
                    "requesting organisation ($critical-escalate or the periodic check).",
     "context": ["Communication"], "value": "dateTime"},
    {"id": "consultation-overdue", "name": "ConsultationOverdue",
     "title": "会诊逾期 Consultation overdue",
     "description": "When the consultation Task passed the deadline of its state (the "
                    "overdue check marks it and tags it sono-consultation-flag|overdue).",
     "context": ["Task"], "value": "dateTime"},
    {"id": "device-qc-date", "name": "DeviceQcDate", "title": "设备质控日期 Device QC date",
     "description": "The date of the device's last passed metrology / imaging quality "
                    "control (US-EQ-01 counts devices in use whose QC is current).",
     "context": ["Device"], "value": "date"},
    {"id": "qc-total-score", "name": "QcTotalScore", "title": "质控总分 QC total score",
     "description": "The total points of a QC review (the sum of the criteria answered yes), "
                    "computed by the server when the QuestionnaireResponse is written.",
     "context": ["QuestionnaireResponse"], "value": "decimal"},
    {"id": "cda-version", "name": "CdaVersion", "title": "文档版本 Document version",
     "description": "The version number of a WS/T 500 CDA document (ClinicalDocument."
                    "versionNumber) the DocumentReference indexes.",
     "context": ["DocumentReference"], "value": "integer"},
    {"id": "cda-source-version", "name": "CdaSourceVersion",
     "title": "来源版本 Source resource version",
     "description": "The version of the DiagnosticReport or Task the stored CDA document was "
                    "made from (a newer version makes a new document).",
     "context": ["DocumentReference"], "value": "integer"},
]


def _sub_extension(base: str, name: str, low: int, value: str, short: str
                   ) -> list[dict[str, Any]]:
    sid = f"{base}:{name}"
    return [
        {"id": sid, "path": base, "sliceName": name, "short": short, "min": low, "max": "1",
         "type": [{"code": "Extension"}]},
        {"id": f"{sid}.extension", "path": f"{base}.extension", "min": 0, "max": "0"},
        {"id": f"{sid}.url", "path": f"{base}.url", "min": 1, "max": "1",
         "type": [{"code": "uri"}], "fixedUri": name},
        {"id": f"{sid}.value[x]", "path": f"{base}.value[x]", "min": 1, "max": "1",
         "type": [{"code": value}]},
    ]


def transition_extension() -> dict[str, Any]:
    """``consultation-transition``: on the Provenance of a consultation state change, the
    business state it left (``from``, absent for the first) and the one it entered (``to``).
    A complex extension, written out as snapshot and differential alike (every element is
    constrained)."""
    ext_url = url("StructureDefinition", "consultation-transition")
    states = url("ValueSet", "sono-consultation-business-status")
    elements: list[dict[str, Any]] = [
        {"id": "Extension", "path": "Extension", "short": "会诊状态变更 Consultation transition",
         "definition": "The business states before and after one consultation transition.",
         "min": 0, "max": "*"},
        {"id": "Extension.extension", "path": "Extension.extension", "min": 1, "max": "2",
         "slicing": {"discriminator": [{"type": "value", "path": "url"}], "ordered": False,
                     "rules": "closed"}, "type": [{"code": "Extension"}]},
        *_sub_extension("Extension.extension", "from", 0, "Coding", "原状态 State left"),
        *_sub_extension("Extension.extension", "to", 1, "Coding", "新状态 State entered"),
        {"id": "Extension.url", "path": "Extension.url", "min": 1, "max": "1",
         "type": [{"code": "uri"}], "fixedUri": ext_url},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 0, "max": "0"},
    ]
    for element in elements:
        if element["id"].endswith(".value[x]") and element["max"] == "1":
            element["binding"] = {"strength": "required", "valueSet": states}
    return {
        "resourceType": "StructureDefinition", "id": "consultation-transition",
        "url": ext_url, "version": __version__, "name": "ConsultationTransition",
        "title": "会诊状态变更 Consultation transition", "status": "active",
        "experimental": False, "date": DATE, "publisher": PUBLISHER,
        "description": "On the Provenance the server writes for each consultation state "
                       "change: the business state left (from) and entered (to).",
        "fhirVersion": "4.0.1", "kind": "complex-type", "abstract": False,
        "context": [{"type": "element", "expression": "Provenance"}], "type": "Extension",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
        "derivation": "constraint", "snapshot": {"element": copy.deepcopy(elements)},
        "differential": {"element": elements},
    }


# ---------------------------------------------------------------------- terminology

BI_RADS = [
    ("0", "0类: 评估未完成, 需要进一步影像评估", "Incomplete: need additional imaging"),
    ("1", "1类: 阴性", "Negative"),
    ("2", "2类: 良性", "Benign"),
    ("3", "3类: 可能良性", "Probably benign"),
    ("4", "4类: 可疑恶性", "Suspicious"),
    ("4A", "4A类: 低度可疑恶性", "Low suspicion for malignancy"),
    ("4B", "4B类: 中度可疑恶性", "Moderate suspicion for malignancy"),
    ("4C", "4C类: 高度可疑恶性", "High suspicion for malignancy"),
    ("5", "5类: 高度提示恶性", "Highly suggestive of malignancy"),
    ("6", "6类: 活检证实恶性", "Known biopsy-proven malignancy"),
]


def _indicators() -> list[tuple[str, str, str]]:
    out = []
    for measure in MEASURES.values():
        code = measure["identifier"][0]["value"]
        zh, _, en = str(measure["title"]).partition(" ")
        out.append((code, zh, en or zh))
    return out


TERMINOLOGY: list[tuple[str, str, str, str, list[tuple[str, str, str]]]] = [
    ("sono-critical-value-flag", "SonoCriticalValueFlag", "危急值标记 Critical value flags",
     "Tags the critical-values domain puts on a Communication (meta.tag).",
     [("escalated", "已升级", "Escalated to the requesting organisation, unacknowledged")]),
    ("sono-consultation-flag", "SonoConsultationFlag", "会诊标记 Consultation flags",
     "Tags the consultation workflow puts on a Task (meta.tag).",
     [("overdue", "逾期", "Past the deadline of its state")]),
    ("bi-rads", "BiRads", "BI-RADS 分类 BI-RADS assessment categories",
     "The breast imaging assessment categories (ACR BI-RADS, ultrasound) coded in a breast "
     "ultrasound report's conclusionCode (US-BR-01).", BI_RADS),
    ("qc-task", "QcTask", "质控任务 QC task kinds",
     "The kind of review a sampled QC Task asks for (Task.code).",
     [("image-qc", "存图质控", "Image QC review of an ultrasound study"),
      ("report-qc", "报告质控", "QC review of an ultrasound report")]),
    ("us-qc-indicator", "UsQcIndicator", "超声质控指标 Ultrasound QC indicators",
     "The ultrasound quality-control indicators (2022 edition) the guide's Measures compute; "
     "also the Measure.identifier system.", _indicators()),
    ("sono-job", "SonoJob", "后台任务 Background jobs",
     "The kind of work a server-side job Task asks for (Task.code), e.g. rendering a "
     "report's PDF after it is signed.",
     [("report-pdf", "生成报告 PDF", "Render the report's PDF")]),
]

# Identifier systems: (id, name, uri, 中文 + English description)
NAMING_SYSTEMS = [
    ("sr-instance", "SrInstance", sr.SR_INSTANCE_SYSTEM,
     "SR 实例 The SOP Instance UID of the DICOM SR an Observation was mapped from "
     "(Observation.identifier; one SR's Observations are replaced together)."),
    ("sr-item", "SrItem", sr.SR_ITEM_SYSTEM,
     "SR 条目 One content item of a DICOM SR: the SR's SOP Instance UID and the item's "
     "position, so the same item maps to the same Observation again."),
    ("qc-sample", "QcSample", qc.SAMPLE_SYSTEM,
     "质控抽样 A sampled QC Task: month and the study or report reviewed (one Task per "
     "sample, so sampling twice creates nothing new)."),
]


def document_formats() -> dict[str, Any]:
    """The DocumentReference.content.format codes of the WS/T 500 documents the server makes
    and stores: the template OID as a URI (``urn:ietf:rfc:3986``, as IHE format codes of
    documents without a registered code are written), one per document kind."""
    vs = _common("ValueSet", "sono-document-format", "SonoDocumentFormat",
                 "共享文档格式 WS/T 500 document formats",
                 "The format of a stored WS/T 500 shared document (DocumentReference.content."
                 "format): its template id, WS/T 500.6 检查报告 or WS/T 500.45 会诊记录.")
    vs["compose"] = {"include": [{"system": cda_codes.FORMAT_SYSTEM, "concept": [
        {"code": cda_codes.REPORT_FORMAT, "display": "WS/T 500.6 检查报告",
         "designation": [{"language": "en", "value": "WS/T 500.6 examination report"}]},
        {"code": cda_codes.CONSULT_FORMAT, "display": "WS/T 500.45 会诊记录",
         "designation": [{"language": "en", "value": "WS/T 500.45 consultation record"}]},
    ]}]}
    return vs


def naming_systems() -> list[dict[str, Any]]:
    out = []
    for rid, name, uri, description in NAMING_SYSTEMS:
        out.append({"resourceType": "NamingSystem", "id": rid, "name": name,
                    "status": "active", "kind": "identifier", "date": DATE,
                    "publisher": PUBLISHER, "description": description,
                    "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166",
                                                  "code": "CN"}]}],
                    "uniqueId": [{"type": "uri", "value": uri, "preferred": True}]})
    return out


# ---------------------------------------------------------------------- operations

def _param(name: str, use: str, low: int, high: str, ptype: str | None, doc: str
           ) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "use": use, "min": low, "max": high,
                           "documentation": doc}
    if ptype:
        out["type"] = ptype
    return out


def _operation(rid: str, name: str, title: str, description: str, resources: list[str],
               *, system: bool = False, type_level: bool = False, instance: bool = False,
               affects_state: bool = True, parameters: list[dict[str, Any]],
               code: str | None = None) -> dict[str, Any]:
    op = _common("OperationDefinition", rid, name, title, description)
    op.update({"kind": "operation", "affectsState": affects_state, "code": code or rid,
               "system": system, "type": type_level, "instance": instance,
               "parameter": parameters})
    if resources:
        op["resource"] = resources
    return op


def operations() -> list[dict[str, Any]]:
    return [
        _operation(
            "critical-escalate", "CriticalEscalate",
            "危急值升级 Critical value escalation ($critical-escalate)",
            "Escalate now every critical-value notification not acknowledged within the limit "
            "(US-CV-01) to the requesting organisation; what the periodic check does, for a "
            "scheduler outside the server. Needs the right to create Communications.",
            ["Communication"], type_level=True,
            parameters=[_param("escalated", "out", 1, "1", "integer",
                               "How many notifications were escalated 升级条数")]),
        _operation(
            "sr-observations", "SrObservations",
            "SR 测量重建 SR observations rebuilt ($sr-observations)",
            "Map every stored DICOM SR (TID 1500/5000/5100/5200) to Observations again, one "
            "transaction per SR (after sonobridge reindex, or a mapping change).", [],
            system=True,
            parameters=[_param("srs", "out", 1, "1", "integer",
                               "How many SRs were mapped 映射的 SR 数")]),
        _operation(
            "teaching-case", "TeachingCase", "教学病例 Teaching case ($teaching-case)",
            "Publish a de-identified copy of this ultrasound study as a teaching case "
            "(DICOM PS3.15 Basic Profile with Clean Pixel Data; a KOS titled For Teaching); "
            "answers 201 with the SonoTeachingCase DocumentReference. 409 for a second case "
            "of the same study unless force, 422 when burned-in text cannot be cleaned.",
            ["ImagingStudy"], instance=True,
            parameters=[
                _param("keyImage", "in", 0, "*", "string", "关键图像 SOP Instance UIDs to "
                       "keep (default: every image)"),
                _param("keyword", "in", 0, "*", "string", "关键词 Keywords"),
                _param("diagnosis", "in", 0, "*", "Coding", "诊断 Diagnoses (Coding or "
                       "system|code)"),
                _param("bodySite", "in", 0, "1", "Coding", "部位 Body site"),
                _param("difficulty", "in", 0, "1", "code",
                       "难度 basic | intermediate | advanced"),
                _param("title", "in", 0, "1", "string", "标题 Title of the case"),
                _param("force", "in", 0, "1", "boolean",
                       "Make a case even when one exists for the study"),
                _param("return", "out", 1, "1", "DocumentReference",
                       "The teaching case 教学病例")]),
        _operation(
            "teaching-case-withdraw", "TeachingCaseWithdraw",
            "撤回教学病例 Teaching case withdrawn ($teaching-case-withdraw)",
            "Withdraw a teaching case: its de-identified copy (study, KOS, pseudo patient's "
            "study) and report are deleted with the case; the original is untouched.",
            ["DocumentReference"], instance=True,
            parameters=[_param("return", "out", 1, "1", "OperationOutcome",
                               "What was withdrawn")]),
        _operation(
            "cda", "Cda", "CDA 文档 WS/T 500 CDA document ($cda)",
            "The WS/T 500 CDA document of a final ultrasound DiagnosticReport (WS/T 500.6 "
            "检查报告) or of a completed consultation Task (WS/T 500.45 会诊记录), as "
            "application/xml; the document is also indexed by a DocumentReference.",
            ["DiagnosticReport", "Task"], instance=True, affects_state=False,
            parameters=[_param("return", "out", 1, "1", "Binary",
                               "The CDA document (application/xml)")]),
        _operation(
            "DiagnosticReport-pdf", "DiagnosticReportPdf", "报告 PDF Report as PDF ($pdf)",
            "The ultrasound report as a printable PDF (Chinese report layout, CJK fonts "
            "embedded): the stored PDF of a signed version, else made now.",
            ["DiagnosticReport"], instance=True, affects_state=False, code="pdf",
            parameters=[_param("return", "out", 1, "1", "Binary",
                               "The report (application/pdf)")]),
    ]


# ---------------------------------------------------------------------- profiles

TEACHING_PROFILE: dict[str, Any] = {
    "id": "sono-teaching-case", "name": "SonoTeachingCase", "type": "DocumentReference",
    "title": "教学病例 Teaching case",
    "description": "A de-identified ultrasound teaching case ($teaching-case): type DCM "
                   "113004 For Teaching, the copy's pseudo patient as subject, categories for "
                   "diagnoses, body site, keywords and difficulty, the copy's DICOMweb study "
                   "URL as attachment and the copy's ImagingStudy (and de-identified reports) "
                   "in context.related; labelled PSEUDED.",
    "differential": [
        {"id": "DocumentReference", "path": "DocumentReference", "constraint": [
            _invariant("sono-teach-1", "Labelled pseudonymized 标注为已假名化 (PSEUDED)",
                       "meta.security.where(system = 'http://terminology.hl7.org/CodeSystem/"
                       "v3-ObservationValue' and code = 'PSEUDED').exists()"),
            _invariant("sono-teach-2", "The attachment gives the copy's DICOMweb study URL "
                       "附件为去标识化副本的 DICOMweb 地址",
                       "content.attachment.url.exists()")]},
        {"id": "DocumentReference.status", "path": "DocumentReference.status",
         "patternCode": "current"},
        {"id": "DocumentReference.type", "path": "DocumentReference.type", "min": 1,
         "short": "For Teaching (DCM 113004)",
         "patternCodeableConcept": {"coding": [{"system": DCM, "code": "113004"}]}},
        {"id": "DocumentReference.category", "path": "DocumentReference.category",
         "short": "诊断、部位、关键词、难度 Diagnoses, body site, keywords, difficulty",
         "mustSupport": True},
        {"id": "DocumentReference.subject", "path": "DocumentReference.subject",
         "short": "假名患者 The copy's pseudo patient", "mustSupport": True,
         "type": [{"code": "Reference",
                   "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"]}]},
        {"id": "DocumentReference.description", "path": "DocumentReference.description",
         "min": 1, "short": "标题 Title"},
        {"id": "DocumentReference.content", "path": "DocumentReference.content", "max": "1"},
        {"id": "DocumentReference.context", "path": "DocumentReference.context", "min": 1},
        {"id": "DocumentReference.context.related",
         "path": "DocumentReference.context.related", "min": 1,
         "short": "去标识化的检查与报告 The de-identified study and reports",
         "type": [{"code": "Reference", "targetProfile": [
             "http://hl7.org/fhir/StructureDefinition/ImagingStudy",
             "http://hl7.org/fhir/StructureDefinition/DiagnosticReport"]}]},
    ],
}


def teaching_example() -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference", "id": "example-teaching-case",
        "meta": {"profile": [url("StructureDefinition", "sono-teaching-case")],
                 "tag": [dict(teaching.TEACHING_TAG)], "security": [dict(teaching.PSEUDED)]},
        "status": "current",
        "type": {"coding": [dict(teaching.FOR_TEACHING)], "text": "Teaching case"},
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "300331000"}],
                      "text": "肝内占位 Liver mass"},
                     {"coding": [{"system": teaching.DIFFICULTY_SYSTEM,
                                  "code": "intermediate"}]}],
        "subject": {"reference": "Patient/example-patient"},
        "date": "2026-12-02T08:00:00+00:00",
        "description": "肝右叶实性结节 Solid nodule of the right liver lobe",
        "content": [{"attachment": {
            "contentType": "application/dicom",
            "url": "https://gateway.example/dicomweb/studies/2.25.1234567890",
            "title": "De-identified study (US)"}}],
        "context": {"related": [{"reference": "ImagingStudy/example-study"}]},
    }


# ---------------------------------------------------------------------- QC content

def library() -> dict[str, Any]:
    """The Library the Measures name: what their population criteria refer to (the views)."""
    lib = _common("Library", LIBRARY.rsplit("/", 1)[-1], "UsQcIndicators",
                  "超声质控指标 Ultrasound QC indicators",
                  "The criteria of the ultrasound QC Measures: each population expression "
                  "names a column test over one of the guide's ViewDefinitions (SQL on FHIR), "
                  "evaluated by $evaluate-measure.")
    lib["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type",
                               "code": "logic-library"}]}
    lib["relatedArtifact"] = [{"type": "depends-on", "resource": view["url"]}
                              for view in SHIPPED.values()]
    return lib


def qc_resources() -> list[dict[str, Any]]:
    out = [copy.deepcopy(q) for q in (qc.IMAGE_QC, qc.REPORT_QC)]
    for q in out:
        q.setdefault("date", DATE)
        q.setdefault("publisher", PUBLISHER)
    out += [copy.deepcopy(m) for m in MEASURES.values()]
    out.append(library())
    return out


def view_definitions() -> list[dict[str, Any]]:
    """The shipped ViewDefinitions (SQL on FHIR v2). Not an R4 resource type: they go in the
    package as the SQL-on-FHIR guide ships them, and the server answers ``$run`` on them."""
    return [copy.deepcopy(v) for v in SHIPPED.values()]


# ---------------------------------------------------------------------- subscription topics

TOPIC_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."


def subscription_topics() -> list[dict[str, Any]]:
    """The server's topics as the Subscriptions Backport IG carries R5 SubscriptionTopics on
    an R4 server: ``Basic`` with code ``SubscriptionTopic`` and the R5 elements as
    cross-version extensions."""
    out = []
    for topic in TOPICS.values():
        extension: list[dict[str, Any]] = [
            {"url": TOPIC_EXT + "url", "valueUri": topic.canonical},
            {"url": TOPIC_EXT + "version", "valueString": __version__},
            {"url": TOPIC_EXT + "name", "valueString": topic.code},
            {"url": TOPIC_EXT + "title", "valueString": topic.code},
            {"url": TOPIC_EXT + "date", "valueDateTime": DATE},
            {"url": TOPIC_EXT + "description", "valueMarkdown": topic.description},
            {"url": TOPIC_EXT + "resourceTrigger", "extension": [
                {"url": "description", "valueMarkdown": topic.description},
                {"url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/"
                                                + topic.resource_type},
                {"url": "supportedInteraction", "valueCode": "create"},
                {"url": "supportedInteraction", "valueCode": "update"}]},
        ]
        for name in topic.filters:
            extension.append({"url": TOPIC_EXT + "canFilterBy", "extension": [
                {"url": "resource", "valueUri": topic.resource_type},
                {"url": "filterParameter", "valueString": name}]})
        extension.append({"url": TOPIC_EXT + "notificationShape", "extension": [
            {"url": "resource", "valueUri": topic.resource_type}]})
        out.append({
            "resourceType": "Basic", "id": f"topic-{topic.code}",
            "modifierExtension": [{"url": TOPIC_EXT + "status", "valueCode": "active"}],
            "extension": extension,
            "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types",
                                 "code": "SubscriptionTopic"}]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">"
                     f"订阅主题 SubscriptionTopic {topic.canonical}</div>"}})
    return out


def canonical_of(resource: dict[str, Any]) -> list[str]:
    """The canonical(s) a guide resource answers to: its url, a NamingSystem's uri ids, a
    Basic topic's url extension."""
    found = [resource["url"]] if isinstance(resource.get("url"), str) else []
    if resource.get("resourceType") == "NamingSystem":
        found += [u["value"] for u in resource.get("uniqueId", []) if u.get("type") == "uri"]
    if resource.get("resourceType") == "Basic":
        found += [e["valueUri"] for e in resource.get("extension", [])
                  if e.get("url") == TOPIC_EXT + "url"]
    return found

