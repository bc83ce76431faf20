"""The views SonoBridge ships: the data behind the QC indicators, ready for DuckDB or pandas.

Each is a plain SQL on FHIR v2 ViewDefinition over the profiles of the implementation guide
(SonoUltrasoundReport, SonoCriticalValueCommunication, the consultation ServiceRequest), so an
analyst gets the same rows from ``ViewDefinition/<id>/$run`` or ``sonobridge view run`` as the
indicators (``core/measures``) count. Keys are ``getResourceKey()``/``getReferenceKey()``, so
the tables join on them.
"""

from __future__ import annotations

from typing import Any

BASE = "http://sonobridge.org/fhir"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
BREAST_US = "24601-7"  # LOINC: US Breast
# The BI-RADS assessment category (0, 1, 2, 3, 4A, 4B, 4C, 5, 6) of a breast report's
# conclusion, in this server's code system until the guide names a standard one.
BI_RADS = f"{BASE}/CodeSystem/bi-rads"
# SNOMED CT 17621005 |Normal|: a report concluded with only this code is a negative exam.
NORMAL = "17621005"


def _col(name: str, path: str, col_type: str = "string", collection: bool = False
         ) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "path": path, "type": col_type}
    if collection:
        out["collection"] = True
    return out


def _view(view_id: str, title: str, resource: str, columns: list[dict[str, Any]],
          where: list[str] | None = None, description: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ViewDefinition", "id": view_id, "url": f"{BASE}/ViewDefinition/{view_id}",
        "name": view_id.replace("-", "_"), "title": title, "status": "active",
        "description": description, "resource": resource,
        "select": [{"column": columns}]}
    if where:
        body["where"] = [{"path": w} for w in where]
    return body


REPORTS = _view(
    "us-reports", "超声报告 Ultrasound reports", "DiagnosticReport", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("issued", "issued", "instant"),
        _col("effective", "effective.ofType(dateTime)", "dateTime"),
        _col("patient", "subject.getReferenceKey(Patient)", "id"),
        _col("practitioner", "performer.getReferenceKey(Practitioner).first()", "id"),
        _col("organization", "performer.getReferenceKey(Organization).first()", "id"),
        _col("request", "basedOn.getReferenceKey(ServiceRequest).first()", "id"),
        _col("study", "imagingStudy.getReferenceKey(ImagingStudy).first()", "id"),
        _col("positive", f"conclusionCode.exists() and conclusionCode.coding.where(system = "
                         f"'{SNOMED}' and code = '{NORMAL}').empty()", "boolean"),
        _col("breast", f"code.coding.where(system = '{LOINC}' and code = '{BREAST_US}')"
                       ".exists() or code.text.contains('乳腺') or "
                       "code.text.lower().contains('breast')", "boolean"),
        _col("birads", f"conclusionCode.coding.where(system = '{BI_RADS}').code.first()",
             "code"),
    ],
    where=[f"category.coding.where(system = '{V2_0074}' and code = 'RUS').exists()"],
    description="One row per ultrasound report (category RUS): who issued it when, for which "
                "request and study; positive = coded conclusion other than SNOMED 17621005 "
                "Normal; breast = LOINC 24601-7 US Breast or 乳腺/breast in the code's text; "
                "birads = the conclusion's BI-RADS category.")

REQUESTS = _view(
    "us-requests", "超声检查申请 Ultrasound requests", "ServiceRequest", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("authored", "authoredOn", "dateTime"),
        _col("patient", "subject.getReferenceKey(Patient)", "id"),
        _col("encounter", "encounter.getReferenceKey(Encounter)", "id"),
        _col("requester", "requester.getReferenceKey()", "id"),
        _col("ultrasound", f"category.coding.where(system = '{V2_0074}' and code = 'RUS')"
                           f".exists() or code.coding.where(system = '{DCM}' and code = 'US')"
                           ".exists()", "boolean"),
    ],
    description="One row per ServiceRequest: when it was ordered, in which encounter, and "
                "whether it asks for ultrasound (category RUS or code DCM US); US-TL-01 counts "
                "the ultrasound ones of inpatient encounters.")

ENCOUNTERS = _view(
    "us-encounters", "就诊 Encounters", "Encounter", [
        _col("id", "getResourceKey()", "id"),
        _col("class", "class.code", "code"),
        _col("organization", "serviceProvider.getReferenceKey(Organization)", "id"),
    ],
    description="Encounter class per encounter (IMP = inpatient, v3 ActCode).")

CRITICAL = _view(
    "us-critical-values", "危急值通知 Critical value notifications", "Communication", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("sent", "sent", "dateTime"),
        _col("report", "about.getReferenceKey(DiagnosticReport).first()", "id"),
        _col("patient", "subject.getReferenceKey(Patient)", "id"),
        _col("sender", "sender.getReferenceKey(Practitioner)", "id"),
        _col("received", "received", "dateTime"),
        _col("follow_up", "inResponseTo.exists() or partOf.exists()", "boolean"),
    ],
    where=["category.coding.where(code = 'alert').exists()"],
    description="One row per critical value notification (Communication, category alert), "
                "with the report it is about, when it was sent and acknowledged (received); "
                "follow_up marks replies and escalations (inResponseTo/partOf), which are "
                "not critical values of their own.")

EXAMS = _view(
    "us-exams", "超声检查 Ultrasound exams", "ImagingStudy", [
        _col("id", "getResourceKey()", "id"),
        _col("started", "started", "dateTime"),
        _col("patient", "subject.getReferenceKey(Patient)", "id"),
        _col("request", "basedOn.getReferenceKey(ServiceRequest).first()", "id"),
        _col("device", "series.performer.actor.getReferenceKey(Device).first()", "id"),
        _col("organization", "series.performer.actor.getReferenceKey(Organization).first()",
             "id"),
        _col("instances", "numberOfInstances", "unsignedInt"),
    ],
    where=["modality.where(code = 'US').exists() or series.modality.where(code = 'US')"
           ".exists()"],
    description="One row per ultrasound ImagingStudy (modality US): when, on which device.")

DEVICES = _view(
    "us-devices", "超声仪器 Ultrasound devices", "Device", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("name", "deviceName.name.first()"),
        _col("organization", "owner.getReferenceKey(Organization)", "id"),
        _col("qc_date", "extension.where(url = '" + BASE + "/StructureDefinition/device-qc-date')"
                        ".value.ofType(date).first()", "date"),
    ],
    description="Device inventory (status active = in use) with the date of its last passed "
                "metrology/imaging QC (extension device-qc-date).")

QC_REVIEWS = _view(
    "us-qc-reviews", "质控评审 QC reviews", "QuestionnaireResponse", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("authored", "authored", "dateTime"),
        _col("questionnaire", "questionnaire"),
        _col("report", "subject.getReferenceKey(DiagnosticReport)", "id"),
        _col("study", "subject.getReferenceKey(ImagingStudy)", "id"),
        _col("reviewer", "author.getReferenceKey(Practitioner)", "id"),
        _col("score", "extension.where(url = '" + BASE + "/StructureDefinition/qc-total-score')"
                      ".value.ofType(decimal).first()", "decimal"),
    ],
    description="One row per QC review (QuestionnaireResponse) with its total score.")

GUIDED = ("(code.text.contains('超声引导') or code.text.lower().contains('ultrasound-guided') "
          "or code.text.lower().contains('us-guided') or category.text.contains('超声介入'))")
INTERVENTIONS = _view(
    "us-interventions", "超声介入 Ultrasound-guided interventions", "Procedure", [
        _col("id", "getResourceKey()", "id"),
        _col("status", "status", "code"),
        _col("performed", "performed.ofType(dateTime)", "dateTime"),
        _col("performed_start", "performed.ofType(Period).start", "dateTime"),
        _col("patient", "subject.getReferenceKey(Patient)", "id"),
        _col("practitioner", "performer.actor.getReferenceKey(Practitioner).first()", "id"),
        _col("organization", "performer.onBehalfOf.getReferenceKey(Organization).first()",
             "id"),
        _col("device", "usedReference.getReferenceKey(Device).first()", "id"),
        _col("guided", GUIDED, "boolean"),
        _col("complication", "complication.exists()", "boolean"),
    ],
    description="One row per Procedure: when, by whom, on which device; guided = 超声引导 / "
                "ultrasound-guided / US-guided in the code's text or 超声介入 in the "
                "category's text; complication = a complication recorded.")

SHIPPED: dict[str, dict[str, Any]] = {
    v["id"]: v for v in (REPORTS, REQUESTS, ENCOUNTERS, CRITICAL, EXAMS, DEVICES, QC_REVIEWS,
                         INTERVENTIONS)}
