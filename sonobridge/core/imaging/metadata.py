"""DICOM JSON (PS3.18 F.2) for stored instances, and the attributes kept per level.

An instance's metadata is computed once, at ingest, with bulk data replaced by BulkDataURIs that
start with a placeholder; serving it is a byte replace of the placeholder with the request's
base URL, so links honour ``SONOBRIDGE_BASE_URL`` and ``X-Forwarded-*`` without re-encoding.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

BASE = "@@SONOBRIDGE-DICOMWEB@@"
BASE_BYTES = BASE.encode()
BULK_THRESHOLD = 1024
VIDEO_SYNTAXES = {f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)}


def _tags(*keywords: str) -> frozenset[str]:
    return frozenset(f"{tag_for_keyword(k):08X}" for k in keywords)


# PS3.4 C.6.1.1.2/3 study and series level keys, and PS3.18 Table 6.7.1-2 defaults.
STUDY_TAGS = _tags(
    "SpecificCharacterSet", "TimezoneOffsetFromUTC", "StudyDate", "StudyTime",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
    "StudyDescription", "ProcedureCodeSequence", "StudyInstanceUID", "StudyID",
    "PatientAge", "PatientSize", "PatientWeight", "AdmittingDiagnosesDescription",
    "ReasonForPerformedProcedureCodeSequence", "OtherStudyNumbers", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy")
SERIES_TAGS = _tags(
    "SpecificCharacterSet", "TimezoneOffsetFromUTC", "Modality", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime", "BodyPartExamined",
    "Laterality", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID", "RequestAttributesSequence", "OperatorsName", "ProtocolName",
    "Manufacturer", "ManufacturerModelName", "StationName", "InstitutionName",
    "InstitutionalDepartmentName", "PerformingPhysicianName")
INSTANCE_DEFAULT = _tags(
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
    "TimezoneOffsetFromUTC", "RetrieveURL", "InstanceNumber", "Rows", "Columns",
    "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID")
STUDY_DEFAULT = _tags(
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber",
    "InstanceAvailability", "ModalitiesInStudy", "ReferringPhysicianName",
    "TimezoneOffsetFromUTC", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "StudyDescription")
SERIES_DEFAULT = _tags(
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
    "RetrieveURL", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "RequestAttributesSequence", "StudyInstanceUID", "SeriesDate", "SeriesTime",
    "BodyPartExamined")


def instance_uri(study: str, series: str, sop: str) -> str:
    return f"{BASE}/studies/{study}/series/{series}/instances/{sop}"


def instance_json(ds: Dataset, study: str, series: str, sop: str, transfer_syntax: str,
                  pixel_vr: str | None, dropped: list[str] | None = None) -> dict[str, Any]:
    """The instance's DICOM JSON with every bulk value as a BulkDataURI (placeholder base).

    A value DICOM JSON cannot carry (a DS or IS that is not a number, say ``abc`` in a
    measurement of an SR) is left out, its attribute's path added to ``dropped``: the object
    is still stored whole, and its metadata holds everything else.
    """
    prefix = instance_uri(study, series, sop)

    def bulk(element: Any) -> str:
        return f"{prefix}/bulkdata/{element.tag:08X}"

    data = _json(ds, bulk, "", dropped if dropped is not None else [])
    data.pop("7FE00001", None)  # offset tables describe the file, not the image
    data.pop("7FE00002", None)
    if pixel_vr is not None:
        data["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{prefix}/bulkdata/7FE00010"}
    if transfer_syntax in VIDEO_SYNTAXES:
        data["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}  # AvailableTransferSyntaxUID
    return dict(sorted(data.items()))


def _json(ds: Dataset, bulk: Any, path: str, dropped: list[str]) -> dict[str, Any]:
    """``Dataset.to_json_dict``, and where it fails, again element by element.

    pydicom can skip the elements it cannot convert (``suppress_invalid_tags``), but only as a
    whole at the top level: a bad value deep in an SR's content tree would take the whole
    ContentSequence with it. So a sequence it left out is rebuilt here item by item, and only
    the element that failed is dropped.
    """
    try:
        data: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD,
                                              bulk_data_element_handler=bulk)
        return data
    except (ValueError, TypeError, OverflowError):
        pass
    data = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk,
                           suppress_invalid_tags=True)
    for element in ds:
        key = f"{element.tag:08X}"
        if key in data:
            continue
        if element.VR == "SQ":
            items = [_json(item, bulk, f"{path}{key}[{n}].", dropped)
                     for n, item in enumerate(element.value)]
            data[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            dropped.append(f"{path}{key}")
    return dict(sorted(data.items()))


def pick(data: dict[str, Any], tags: frozenset[str], *, patient: bool = False) -> dict[str, Any]:
    """The attributes of one level (``patient``: all of group 0010 as well)."""
    return {tag: value for tag, value in data.items()
            if tag in tags or (patient and tag.startswith("0010"))}


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def first(data: dict[str, Any], keyword: str) -> Any:
    """The first value of an attribute in DICOM JSON (``None`` when absent)."""
    element = data.get(f"{tag_for_keyword(keyword):08X}")
    if not element:
        return None
    values = element.get("Value")
    if not values:
        return None
    value = values[0]
    if element.get("vr") == "PN" and isinstance(value, dict):
        return pn_text(value)
    return value


def pn_text(value: dict[str, Any]) -> str:
    """A DICOM JSON person name as DICOM text: ``Alphabetic=Ideographic=Phonetic``, trailing
    empty groups left out."""
    return "=".join(value.get(group, "") for group in ("Alphabetic", "Ideographic",
                                                         "Phonetic")).rstrip("=")
