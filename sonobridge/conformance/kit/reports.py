"""The reports suite: do stored SRs become Observations, does a report's status follow R4, and
does a critical finding notify (issue 14; STANDARDS.md §8)?

Against a FHIR base (``--target``) and its DICOMweb root (``--dicomweb``, else the sibling
``/dicomweb``): the kit stores an ultrasound image and a TID 1500 Comprehensive SR of one liver
lesion measurement (built here with pydicom, content items as PS3.16 TID 1500 / 1501 / 300
say), and checks that the measurement is an Observation with its SNOMED code, a UCUM quantity,
its finding site and the ImagingStudy it derives from, grouped by a measurement-group
Observation, and that storing the SR again adds none. Then a report (tagged) walks
preliminary -> final -> amended, with a change of a final report in place and a step back both
refused (409); and a final report with a critical finding (the guide's sono-critical-finding
code system) is followed by a critical-value Communication about it. Everything written through
FHIR is deleted at the end (the DICOM objects stay: DICOMweb has no delete).
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from sonobridge.conformance.kit.data import make_cine, multipart
from sonobridge.conformance.kit.dicomweb import root
from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, R4, base, run_tag
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

DICOM_JSON = "application/dicom+json"
SR_IG = "https://build.fhir.org/ig/HL7/dicom-sr"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SR_INSTANCE_SYSTEM = "http://sonobridge.org/fhir/sid/sr-instance"
CRITICAL_SYSTEM = "http://sonobridge.org/fhir/CodeSystem/sono-critical-finding"
CRITICAL_PROFILE = ("http://sonobridge.org/fhir/StructureDefinition/"
                    "sono-critical-value-communication")


# ---------------------------------------------------------------------- a TID 1500 SR

def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _item(relation: str | None, kind: str, name: Dataset, **values: Any) -> Dataset:
    item = Dataset()
    if relation:
        item.RelationshipType = relation
    item.ValueType = kind
    item.ConceptNameCodeSequence = [name]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def make_sr(image: Dataset | None, study: str, patient_id: str, diameter: float,
            sop: str | None = None, series: str | None = None) -> tuple[str, bytes]:
    """A TID 1500 Measurement Report with one measurement group: a liver lesion diameter."""
    measured = Dataset()
    measured.NumericValue = f"{diameter:g}"
    measured.MeasurementUnitsCodeSequence = [_code("mm", "UCUM", "mm")]
    num = _item("CONTAINS", "NUM", _code("81827009", "SCT", "Diameter"),
                MeasuredValueSequence=[measured])
    num.ContentSequence = [_item("HAS CONCEPT MOD", "CODE", _code("363698007", "SCT",
                                                                  "Finding Site"),
                                 ConceptCodeSequence=[_code("10200004", "SCT", "Liver")])]
    group = _item("CONTAINS", "CONTAINER", _code("125007", "DCM", "Measurement Group"),
                  ContinuityOfContent="SEPARATE")
    group.ContentSequence = [
        _item("HAS OBS CONTEXT", "TEXT", _code("112039", "DCM", "Tracking Identifier"),
              TextValue="kit lesion 1"),
        _item("HAS OBS CONTEXT", "UIDREF", _code("112040", "DCM",
                                                 "Tracking Unique Identifier"),
              UID=generate_uid()),
        num]
    measurements = _item("CONTAINS", "CONTAINER", _code("126010", "DCM",
                                                        "Imaging Measurements"),
                         ContinuityOfContent="SEPARATE")
    measurements.ContentSequence = [group]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "1500"
    sop = sop or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(COMPREHENSIVE_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    now = datetime.now(UTC)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series or generate_uid()
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality, ds.Manufacturer = "SR", "SonoBridge conformance kit"
    ds.PatientName, ds.PatientID = "KIT^CONFORMANCE", patient_id
    ds.PatientBirthDate, ds.PatientSex = "19800101", "O"
    ds.AccessionNumber = image.AccessionNumber if image is not None else ""
    ds.ReferringPhysicianName, ds.StudyID = "", "1"
    ds.SeriesNumber, ds.InstanceNumber = 99, 1
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("126000", "DCM", "Imaging Measurement Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentTemplateSequence = [template]
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentSequence = [_item("HAS CONCEPT MOD", "CODE", _code("121058", "DCM",
                                                                 "Procedure reported"),
                                ConceptCodeSequence=[_code("24558-9", "LN", "US Abdomen")]),
                          measurements]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return sop, out.getvalue()


# ---------------------------------------------------------------------- SR -> Observations

def _stow(check: Check, parts: list[bytes]) -> None:
    body, ctype = multipart(parts, "application/dicom")
    response = check.http.post(f"{root(check.ctx)}/studies", content=body,
                               headers={"Content-Type": ctype, "Accept": DICOM_JSON})
    expect_status(response, 200, what="STOW-RS of the image and its SR")
    answer = json_body(response, "the STOW-RS response")
    check.expect("00081198" not in answer, "no failed SOP instance in the STOW-RS response")


def _observations(check: Check, sop: str) -> list[dict[str, Any]]:
    response = check.http.get(f"{base(check.ctx)}/Observation", params={
        "identifier": f"{SR_INSTANCE_SYSTEM}|urn:oid:{sop}", "_count": "50"},
        headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    found = [e.get("resource", {}) for e in json_body(response).get("entry", [])
             if e.get("search", {}).get("mode", "match") == "match"]
    check.ctx.state.setdefault("reports_created", []).extend(
        f"Observation/{o.get('id')}" for o in found)
    return found


def sr_stored(check: Check) -> None:
    cine = make_cine(f"SBKIT-SR-{uuid.uuid4().hex[:10]}")
    sop, data = make_sr(None, cine.study, cine.patient_id, 23.5)
    _stow(check, [cine.data, data])
    check.ctx.state["reports_sr"] = {"sop": sop, "data": data, "study": cine.study}


def sr_observations(check: Check) -> None:
    sr = check.ctx.needs("reports_sr", "needs the SR stored by reports-sr-01")
    found = _observations(check, sr["sop"])
    check.expect(len(found) == 2, f"two Observations (group and measurement); found "
                 f"{len(found)}")
    members = [o for o in found if "valueQuantity" in o]
    groups = [o for o in found if o.get("hasMember")]
    check.expect(len(members) == 1 and len(groups) == 1, "one measurement in one group")
    obs = members[0]
    coding = obs.get("code", {}).get("coding", [{}])[0]
    check.expect(coding.get("system") == "http://snomed.info/sct" and
                 coding.get("code") == "81827009", f"code SNOMED CT 81827009; got {coding}")
    quantity = obs.get("valueQuantity", {})
    check.expect(quantity.get("value") == 23.5 and quantity.get("code") == "mm" and
                 quantity.get("system") == "http://unitsofmeasure.org",
                 f"valueQuantity 23.5 mm (UCUM); got {quantity}")
    site = obs.get("bodySite", {}).get("coding", [{}])[0]
    check.expect(site.get("code") == "10200004", f"bodySite liver; got {site}")
    derived = [d.get("reference", "") for d in obs.get("derivedFrom", [])]
    check.expect(any(d.endswith(f"ImagingStudy/{sr['study']}") for d in derived),
                 f"derivedFrom the ImagingStudy; got {derived}")
    check.expect(groups[0]["hasMember"][0].get("reference", "").endswith(
        f"Observation/{obs.get('id')}"), "the group's hasMember is the measurement")
    check.expect(groups[0].get("code", {}).get("coding", [{}])[0].get("code") == "125007",
                 "the group's code is DCM 125007 Measurement Group")


def sr_again(check: Check) -> None:
    sr = check.ctx.needs("reports_sr", "needs the SR stored by reports-sr-01")
    before = {str(o.get("id")) for o in _observations(check, sr["sop"])}
    _stow(check, [sr["data"]])
    after = {str(o.get("id")) for o in _observations(check, sr["sop"])}
    check.expect(after == before and len(after) == 2,
                 f"storing the SR again keeps its Observations ({sorted(before)}), adds none; "
                 f"now {sorted(after)}")


# ---------------------------------------------------------------------- report status

def _report(status: str, conclusion: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v2-0074", "code": "RUS"}]}],
            "code": {"text": "腹部超声 Abdominal ultrasound"},
            "issued": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "conclusion": conclusion, **extra}


def _tag(ctx: Context) -> dict[str, str]:
    return run_tag(ctx, "reports")


def _write(check: Check, body: dict[str, Any], res_id: str | None = None) -> httpx.Response:
    body = {**body, "meta": {"tag": [_tag(check.ctx)]}}
    kind = body["resourceType"]
    if res_id is None:
        response = check.http.post(f"{base(check.ctx)}/{kind}", content=json.dumps(
            body, ensure_ascii=False), headers=HEADERS)
        if response.status_code == 201:
            check.ctx.state.setdefault("reports_created", []).append(
                f"{kind}/{json_body(response).get('id')}")
        return response
    return check.http.put(f"{base(check.ctx)}/{kind}/{res_id}", content=json.dumps(
        {**body, "id": res_id}, ensure_ascii=False), headers=HEADERS)


def _patient(check: Check) -> str:
    if "reports_patient" not in check.ctx.state:
        response = _write(check, {"resourceType": "Patient", "name": [{"text": "测试患者"}]})
        expect_status(response, 201, what="creating the kit's Patient")
        check.ctx.state["reports_patient"] = json_body(response).get("id")
    return str(check.ctx.state["reports_patient"])


def status_flow(check: Check) -> None:
    subject = {"reference": f"Patient/{_patient(check)}"}
    response = _write(check, _report("preliminary", "初稿", subject=subject))
    expect_status(response, 201, what="a preliminary report")
    rid = str(json_body(response).get("id"))
    check.ctx.state["reports_report"] = rid
    expect_status(_write(check, _report("final", "肝胆未见异常", subject=subject), rid), 200,
                  what="preliminary -> final")
    expect_status(_write(check, _report("final", "改动", subject=subject), rid), 409, 422,
                  what="a final report changed in place (not amended)")
    expect_status(_write(check, _report("amended", "补充：胆囊息肉", subject=subject), rid),  # noqa: RUF001
                  200, what="final -> amended")
    expect_status(_write(check, _report("preliminary", "回退", subject=subject), rid), 409,
                  what="amended -> preliminary (going back)")
    history = check.http.get(f"{base(check.ctx)}/DiagnosticReport/{rid}/_history",
                             headers={"Accept": FHIR_JSON})
    expect_status(history, 200)
    statuses = [e.get("resource", {}).get("status")
                for e in json_body(history).get("entry", [])]
    check.expect("final" in statuses and statuses[0] == "amended",
                 f"the final version stays in the history; statuses {statuses}")


def critical(check: Check) -> None:
    patient = _patient(check)
    response = _write(check, {"resourceType": "Practitioner", "name": [{"text": "申请医师"}]})
    expect_status(response, 201, what="the requesting doctor")
    gp = json_body(response).get("id")
    response = _write(check, {"resourceType": "ServiceRequest", "status": "active",
                              "intent": "order", "subject": {"reference": f"Patient/{patient}"},
                              "requester": {"reference": f"Practitioner/{gp}"},
                              "code": {"text": "腹部超声"}})
    expect_status(response, 201, what="the request")
    request = json_body(response).get("id")
    response = _write(check, _report(
        "final", "脾破裂出血可能", subject={"reference": f"Patient/{patient}"},
        basedOn=[{"reference": f"ServiceRequest/{request}"}],
        conclusionCode=[{"coding": [{"system": CRITICAL_SYSTEM, "code": "organ-rupture"}]}]))
    expect_status(response, 201, what="a final report with a critical finding")
    rid = json_body(response).get("id")
    found = check.http.get(f"{base(check.ctx)}/Communication", params={
        "subject": f"Patient/{patient}", "_count": "20"}, headers={"Accept": FHIR_JSON})
    expect_status(found, 200)
    comms = [e.get("resource", {}) for e in json_body(found).get("entry", [])]
    check.ctx.state.setdefault("reports_created", []).extend(
        f"Communication/{c.get('id')}" for c in comms)
    about = [c for c in comms if any(a.get("reference", "").endswith(f"DiagnosticReport/{rid}")
                                     for a in c.get("about", []))]
    check.expect(len(about) == 1, f"one critical-value Communication about the report; "
                 f"found {len(about)}")
    comm = about[0]
    check.expect(comm.get("priority") == "stat", "priority stat")
    check.expect(CRITICAL_PROFILE in comm.get("meta", {}).get("profile", []),
                 "it claims SonoCriticalValueCommunication")
    recipients = [r.get("reference", "") for r in comm.get("recipient", [])]
    check.expect(any(r.endswith(f"Practitioner/{gp}") for r in recipients),
                 f"sent to the requester; recipients {recipients}")
    check.expect(comm.get("sent"), "sent is recorded")


def cleanup(ctx: Context) -> None:
    created = list(dict.fromkeys(ctx.state.get("reports_created", [])))
    if ctx.state.get("reports_report"):
        created.append(f"DiagnosticReport/{ctx.state['reports_report']}")
    order = ["Communication", "DiagnosticReport", "Observation", "ServiceRequest",
             "Practitioner", "Patient"]
    if ctx.state.get("reports_patient"):
        created.append(f"Patient/{ctx.state['reports_patient']}")
    for ref in sorted(dict.fromkeys(created), key=lambda r: order.index(r.split("/")[0])
                      if r.split("/")[0] in order else 0):
        with contextlib.suppress(httpx.HTTPError, Skipped, Failed):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})
    ctx.state["reports_created"] = []


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("reports-sr-01", "A TID 1500 SR is stored", "STOW-RS stores a Comprehensive SR (PS3.18 "
       "10.5).", "https://dicom.nema.org/medical/dicom/current/output/html/part18.html"
       "#sect_10.5", sr_stored),
    _t("reports-sr-02", "Its measurement is an Observation", "A measurement group becomes an "
       "Observation with hasMember; each NUM an Observation with its code, UCUM valueQuantity, "
       "finding site and derivedFrom the ImagingStudy.", f"{SR_IG}/mapping.html",
       sr_observations),
    _t("reports-sr-03", "Storing the SR again adds nothing", "Re-storing an SR replaces its "
       "Observations (no duplicates).", f"{SR_IG}/mapping.html", sr_again),
    _t("reports-status-01", "Report status follows R4", "A final report is changed only by "
       "amendment (amended/corrected/appended); its status does not go back; the previous "
       "version stays in the history.", f"{R4}/valueset-diagnostic-report-status.html",
       status_flow),
    _t("reports-critical-01", "A critical finding notifies the requester", "US-CV-01: a "
       "critical value is notified to the requesting doctor (Communication, priority stat).",
       f"{R4}/communication.html", critical),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("reports", "Ultrasound reports: SR, status, critical values", TESTS,
                  teardown=cleanup)]


SUITE = Suite("reports", "Ultrasound reports (SR to Observation, status, critical values)",
              groups)
