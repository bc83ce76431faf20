"""An open ServiceRequest -> a Modality Worklist item (a pure function: no database, no clock).

One ServiceRequest is one Requested Procedure with one Scheduled Procedure Step. Where each
attribute comes from:

- Scheduled Station AE Title (VM 1-n): the ``identifier`` of each ``Device`` the order names
  as ``performer`` whose type is ``application-entity`` from the HL7 DICOM identifier type
  code system (the one the HL7 Radiation Dose Summary IG's ModalityDevice profile slices on),
  else the configured default stations of the modality; Scheduled Station Name: that
  Device's ``deviceName``.
- Scheduled Performing Physician's Name: the first ``Practitioner`` among the performers.
- Modality: ``category`` coded in DCM (``US`` when the order has none).
- Start Date and Time: ``occurrenceDateTime`` (or ``occurrencePeriod.start``) in the local
  time zone of the modalities (DICOM DA/TM carry no zone).
- Requested Procedure Code Sequence (one item) and Scheduled Protocol Code Sequence (each
  coding): ``code``.
- Patient: name (an ideographic group from a second, CJK name), ID with its issuer, birth
  date, sex.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sonobridge.mappings.hl7v2 import (
    AE_TITLE_TYPE,
    DICOM_IDENTIFIER_TYPE,
    REQUESTED_PROCEDURE_SYSTEM,
    SCHEDULED_STEP_SYSTEM,
)
from sonobridge.mappings.hl7v2 import ID_SYSTEM as HL7_ID_SYSTEM  # + assigning authority

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DEFAULT_MODALITY = "US"
# Coding Scheme Designators (PS3.16 8) of the code systems orders use; others are local ones,
# which PS3.3 8.2 wants to start with "99".
DESIGNATORS = {
    DCM: "DCM", "http://snomed.info/sct": "SCT", "http://loinc.org": "LN",
    "http://www.ama-assn.org/go/cpt": "C4", "http://www.radlex.org": "RADLEX",
    "http://hl7.org/fhir/sid/icd-10": "I10", "http://www.nlm.nih.gov/research/umls/rxnorm":
    "RXNORM",
}
LOCAL_DESIGNATOR = "99LOCAL"
PRIORITY = {"routine": "ROUTINE", "urgent": "HIGH", "asap": "HIGH", "stat": "STAT"}


@dataclass(frozen=True)
class ItemContext:
    """What an item needs beside the order: its patient and performers, and settings."""

    patient: dict[str, Any]
    performers: list[dict[str, Any]] = field(default_factory=list)
    patient_id_system: str = "urn:sonobridge:dicom:patient-id"
    zone: str = "+08:00"
    stations: dict[str, tuple[str, ...]] = field(default_factory=dict)


def study_uid(order: dict[str, Any]) -> str:
    for ident in order.get("identifier", []):
        if ident.get("system") == "urn:dicom:uid" and ident.get("value"):
            return str(ident["value"]).removeprefix("urn:oid:")
    # No UID from the order: a stable one derived from the order's id.
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'ServiceRequest/' + order['id']).int}"


def item(order: dict[str, Any], context: ItemContext) -> Dataset:
    patient = context.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient_name(patient)
    patient_id, issuer = _patient_id(patient, context.patient_id_system)
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = issuer[0]
    if issuer[1]:
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = issuer[1]
        qualifiers.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    ds.PatientBirthDate = patient.get("birthDate", "").replace("-", "")
    ds.PatientSex = {"male": "M", "female": "F", "other": "O"}.get(patient.get("gender", ""), "")
    accession = _identifier(order, type_code="ACSN")
    ds.AccessionNumber = accession[:16]
    ds.ReferringPhysicianName = order.get("requester", {}).get("display", "")[:64]
    ds.StudyInstanceUID = study_uid(order)
    code = order.get("code", {})
    codings = [c for c in code.get("coding", []) if c.get("code")]
    description = (code.get("text") or (codings[0].get("display", "") if codings else ""))[:64]
    ds.RequestedProcedureID = (_identifier(order, system=REQUESTED_PROCEDURE_SYSTEM)
                               or accession or order["id"])[:16]
    ds.RequestedProcedureDescription = description
    ds.RequestedProcedureCodeSequence = Sequence([_code_item(codings[0])] if codings else [])
    ds.RequestedProcedurePriority = PRIORITY.get(order.get("priority", ""), "")
    step = Dataset()
    modality = _modality(order)
    step.Modality = modality
    devices = [p for p in context.performers if p.get("resourceType") == "Device"]
    stations = [ae for d in devices for ae in _ae_titles(d)]
    step.ScheduledStationAETitle = stations or list(context.stations.get(modality, ()))
    step.ScheduledStationName = next((_device_name(d) for d in devices if _ae_titles(d)), "")
    start_date, start_time = local_date_time(_occurrence(order), context.zone)
    step.ScheduledProcedureStepStartDate = start_date
    step.ScheduledProcedureStepStartTime = start_time
    step.ScheduledProcedureStepID = (_identifier(order, system=SCHEDULED_STEP_SYSTEM)
                                     or order["id"])[:16]
    step.ScheduledProcedureStepDescription = description
    step.ScheduledProtocolCodeSequence = Sequence([_code_item(c) for c in codings])
    physician = next((p for p in context.performers
                      if p.get("resourceType") == "Practitioner"), None)
    step.ScheduledPerformingPhysicianName = _pn((physician or {}).get("name") or [{}])
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


# ------------------------------------------------------------------------------ pieces

def _identifier(resource: dict[str, Any], *, system: str | None = None,
                type_code: str | None = None) -> str:
    found = _identifier_of(resource, system=system, type_code=type_code)
    return str(found.get("value", "")) if found else ""


def _identifier_of(resource: dict[str, Any], *, system: str | None = None,
                   type_code: str | None = None) -> dict[str, Any] | None:
    identifiers: list[dict[str, Any]] = resource.get("identifier", [])
    for ident in identifiers:
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])}
        if (system is None or ident.get("system") == system) and \
                (type_code is None or type_code in codes) and ident.get("value"):
            return ident
    return None


def _patient_id(patient: dict[str, Any], system: str) -> tuple[str, tuple[str, str]]:
    """(Patient ID, (Issuer of Patient ID, its OID)): the DICOM Patient ID domain's identifier,
    else the medical record number with the authority that assigned it, else the id."""
    ident = _identifier_of(patient, system=system)
    if ident is not None:
        return str(ident["value"])[:64], ("", "")
    ident = _identifier_of(patient, type_code="MR")
    if ident is None:
        return str(patient.get("id", ""))[:64], ("", "")
    issuer = str(ident.get("system", ""))
    if issuer.startswith(HL7_ID_SYSTEM):
        return str(ident["value"])[:64], (issuer.removeprefix(HL7_ID_SYSTEM)[:64], "")
    if issuer.startswith("urn:oid:"):
        return str(ident["value"])[:64], ("", issuer.removeprefix("urn:oid:")[:64])
    return str(ident["value"])[:64], ("", "")


def _has_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af"
               or "\uf900" <= ch <= "\ufaff" for ch in text)


def _group(name: dict[str, Any]) -> str:
    family = name.get("family", "")
    given = " ".join(name.get("given", []))
    if not family and not given and name.get("text"):
        return str(name["text"])
    return "^".join([family, given]).rstrip("^")


def _pn(names: list[dict[str, Any]]) -> str:
    return _group(names[0]) if names else ""


def patient_name(patient: dict[str, Any]) -> str:
    """The first name as the alphabetic group; a later name in CJK characters (when the first
    is not) as the ideographic group: ``Wang^Wei=王^伟``."""
    names = [n for n in patient.get("name", []) if n.get("use") != "old"] or \
        patient.get("name", [])
    if not names:
        return ""
    first = _group(names[0])
    if _has_cjk(first):
        return first
    ideographic = next((_group(n) for n in names[1:] if _has_cjk(_group(n))), "")
    return f"{first}={ideographic}" if ideographic else first


def _modality(order: dict[str, Any]) -> str:
    codings = [c for cat in order.get("category", []) for c in cat.get("coding", [])]
    coded = next((c for c in codings if c.get("system") == DCM and c.get("code")), None)
    coded = coded or next((c for c in codings if c.get("code")), None)
    return str(coded["code"])[:16] if coded else DEFAULT_MODALITY


def _ae_titles(device: dict[str, Any]) -> list[str]:
    out = []
    for ident in device.get("identifier", []):
        codes = {(c.get("system"), c.get("code")) for c in ident.get("type", {}).get("coding", [])}
        if (DICOM_IDENTIFIER_TYPE, AE_TITLE_TYPE) in codes and ident.get("value"):
            out.append(str(ident["value"]).strip()[:16])
    return out


def _device_name(device: dict[str, Any]) -> str:
    names = device.get("deviceName") or [{}]
    return str(names[0].get("name", ""))[:16]


def _occurrence(order: dict[str, Any]) -> str:
    return str(order.get("occurrenceDateTime")
               or order.get("occurrencePeriod", {}).get("start") or "")


def local_date_time(value: str, zone: str) -> tuple[str, str]:
    """A FHIR dateTime -> (DA, TM) in the given zone (``+08:00``); a date alone has no time,
    and a year or a month alone is no scheduled date."""
    if len(value) == 10:
        return value.replace("-", ""), ""
    if len(value) < 10:
        return "", ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "", ""
    if moment.tzinfo is not None:
        sign = -1 if zone.startswith("-") else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])) * sign
        moment = moment.astimezone(timezone(offset))
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _code_item(coding: dict[str, Any]) -> Dataset:
    out = Dataset()
    code = str(coding["code"])
    if len(code) <= 16:
        out.CodeValue = code
    else:
        out.LongCodeValue = code[:64]
    system = str(coding.get("system", ""))
    out.CodingSchemeDesignator = DESIGNATORS.get(system, LOCAL_DESIGNATOR)
    if coding.get("version"):
        out.CodingSchemeVersion = str(coding["version"])[:16]
    out.CodeMeaning = str(coding.get("display") or code)[:64]
    return out
