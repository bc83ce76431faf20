"""Modality Worklist C-FIND, answered from the open ServiceRequests (from HL7 orders or FHIR).

Each active ServiceRequest is one Scheduled Procedure Step: its accession, procedure, modality
(category), scheduled date/time and patient. Matching follows PS3.4 K.2.2: single value,
wildcards, date ranges, on PatientID, PatientName, AccessionNumber, Modality, Scheduled Station
AE Title and the scheduled start date.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sonobridge.jsonio import loads

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def _identifier(resource: dict[str, Any], *, system: str | None = None,
                type_code: str | None = None) -> str:
    for ident in resource.get("identifier", []):
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])}
        if (system is None or ident.get("system") == system) and \
                (type_code is None or type_code in codes):
            return str(ident.get("value", ""))
    return ""


def study_uid(order: dict[str, Any]) -> str:
    found = _identifier(order, system="urn:dicom:uid")
    if found:
        return found.removeprefix("urn:oid:")
    # No UID from the order: a stable one derived from the order's id.
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'ServiceRequest/' + order['id']).int}"


def item(order: dict[str, Any], patient: dict[str, Any], patient_system: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    name = (patient.get("name") or [{}])[0]
    ds.PatientName = "^".join([name.get("family", ""), " ".join(name.get("given", []))]
                              ).rstrip("^")
    ds.PatientID = _identifier(patient, system=patient_system) or \
        _identifier(patient, type_code="MR") or patient.get("id", "")
    ds.PatientBirthDate = patient.get("birthDate", "").replace("-", "")
    ds.PatientSex = {"male": "M", "female": "F", "other": "O"}.get(patient.get("gender", ""), "")
    ds.AccessionNumber = _identifier(order, type_code="ACSN")[:16]
    ds.ReferringPhysicianName = order.get("requester", {}).get("display", "")
    ds.StudyInstanceUID = study_uid(order)
    code = order.get("code", {})
    coding = (code.get("coding") or [{}])[0]
    ds.RequestedProcedureID = (_identifier(order, system="urn:sonobridge:requested-procedure")
                               or ds.AccessionNumber or order["id"])[:16]
    ds.RequestedProcedureDescription = (code.get("text") or coding.get("display", ""))[:64]
    step = Dataset()
    modality = ((order.get("category") or [{}])[0].get("coding") or [{}])[0].get("code", "US")
    step.Modality = modality
    step.ScheduledStationAETitle = ""
    when = order.get("occurrenceDateTime", "")
    step.ScheduledProcedureStepStartDate = when[:10].replace("-", "")
    step.ScheduledProcedureStepStartTime = when[11:19].replace(":", "")
    step.ScheduledProcedureStepID = (_identifier(
        order, system="urn:sonobridge:scheduled-procedure-step") or order["id"])[:16]
    step.ScheduledProcedureStepDescription = ds.RequestedProcedureDescription
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _matches(wanted: Any, actual: Any) -> bool:
    if wanted is None or str(wanted) == "":
        return True
    text = str(wanted)
    if "*" in text or "?" in text:
        return fnmatch.fnmatchcase(str(actual).lower(), text.lower())
    return str(actual) == text


def _date_matches(wanted: str, actual: str) -> bool:
    if not wanted:
        return True
    low, dash, high = wanted.partition("-")
    if not dash:
        return actual == low
    return (not low or actual >= low) and (not high or actual <= high)


def matches(query: Dataset, ds: Dataset) -> bool:
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID",
                    "RequestedProcedureID"):
        if not _matches(query.get(keyword), ds.get(keyword, "")):
            return False
    steps = query.get("ScheduledProcedureStepSequence")
    if steps:
        wanted, actual = steps[0], ds.ScheduledProcedureStepSequence[0]
        for keyword in ("Modality", "ScheduledProcedureStepID"):
            if not _matches(wanted.get(keyword), actual.get(keyword, "")):
                return False
        station = str(wanted.get("ScheduledStationAETitle", "") or "")
        if station and station != "*" and actual.ScheduledStationAETitle not in ("", station):
            return False
        if not _date_matches(str(wanted.get("ScheduledProcedureStepStartDate", "") or ""),
                             actual.ScheduledProcedureStepStartDate):
            return False
    return True


def worklist(core: Any, query: Dataset, limit: int = 1000) -> Iterator[Dataset]:
    """The worklist items matching the query (each trimmed to the keys it asked for)."""
    result = core.search.search(["ServiceRequest"], [
        ("status", "active"), ("_count", str(limit)), ("_include", "ServiceRequest:subject")],
        base=core.settings.public_base, headers={}, link_path="ServiceRequest")
    entries = result.bundle.get("entry", [])
    resources = [_resource(e) for e in entries]
    patients = {f"Patient/{r['id']}": r for r in resources if r["resourceType"] == "Patient"}
    system = core.settings.dicom_patient_id_system
    for order in resources:
        if order["resourceType"] != "ServiceRequest":
            continue
        patient = patients.get(order.get("subject", {}).get("reference", ""), {})
        ds = item(order, patient, system)
        if matches(query, ds):
            yield _trimmed(ds, query)


def _resource(entry: dict[str, Any]) -> dict[str, Any]:
    resource = entry["resource"]
    if isinstance(resource, dict):
        return resource
    import orjson

    return loads(orjson.dumps(resource))  # an orjson.Fragment of the stored bytes


def _trimmed(ds: Dataset, query: Dataset) -> Dataset:
    """Return the keys the query asked for (all of ours when it asked for the sequence)."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    for element in query:
        if element.tag.group == 0 or element.keyword == "SpecificCharacterSet":
            continue
        if element.keyword in ds:
            out[element.tag] = ds[element.tag]
        else:
            out.add_new(element.tag, element.VR, None if element.VR != "SQ" else Sequence([]))
    return out
