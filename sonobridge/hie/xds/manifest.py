"""The XDS-I.b imaging manifest (RAD-68): a DICOM Key Object Selection document (SOP class
1.2.840.10008.5.1.4.1.1.88.59, title DCM 113030 "Manifest", TID 2010) listing every stored
instance of a study, each series with the Retrieve Location UID (0040,E011) of the imaging
document source that serves it (RAD-69: this gateway's repository uniqueId). Built with
pydicom from the instances' indexed DICOM JSON, written as a Part 10 file."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from sonobridge.store.dicom.index import StoredInstance

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
MAX_INSTANCES = 10_000  # of one manifest
COPIED = {"00100010": "PatientName", "00100020": "PatientID", "00100021": "IssuerOfPatientID",
          "00100030": "PatientBirthDate", "00100040": "PatientSex", "00080020": "StudyDate",
          "00080030": "StudyTime", "00080050": "AccessionNumber", "00200010": "StudyID",
          "00080090": "ReferringPhysicianName"}


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _value(metadata: dict[str, Any], tag: str) -> Any:
    values = (metadata.get(tag) or {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    return first.get("Alphabetic", "") if isinstance(first, dict) else first


def kos_manifest(instances: Sequence[StoredInstance], repository: str,
                 now: datetime | None = None) -> tuple[bytes, str]:
    """(the Part 10 bytes, its SOP Instance UID) of a manifest of ``instances`` (one study)."""
    if not instances:
        raise ValueError("a manifest needs at least one instance")
    if len(instances) > MAX_INSTANCES:
        raise ValueError(f"more than {MAX_INSTANCES} instances in one study")
    now = now or datetime.now(UTC)
    first = orjson.loads(instances[0].metadata)
    ds = Dataset()
    for tag, keyword in COPIED.items():
        value = _value(first, tag)
        setattr(ds, keyword, value)
    sop_uid = _uid()
    ds.SOPClassUID, ds.SOPInstanceUID = KOS, sop_uid
    ds.StudyInstanceUID = instances[0].study_uid
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = _uid(), 9999, 1
    ds.Modality, ds.Manufacturer = "KO", "SonoBridge"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence([_code("113030", "DCM", "Manifest")])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = DicomSequence([template])
    series: dict[str, list[StoredInstance]] = {}
    for row in instances:
        series.setdefault(row.series_uid, []).append(row)
    study_item = Dataset()
    study_item.StudyInstanceUID = ds.StudyInstanceUID
    study_item.ReferencedSeriesSequence = DicomSequence()
    content = DicomSequence()
    for series_uid, rows in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.RetrieveLocationUID = repository
        item.ReferencedSOPSequence = DicomSequence()
        for row in rows:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = row.sop_class_uid, \
                row.sop_uid
            item.ReferencedSOPSequence.append(ref)
            entry = Dataset()
            entry.RelationshipType, entry.ValueType = "CONTAINS", "IMAGE"
            entry.ReferencedSOPSequence = DicomSequence([ref])
            content.append(entry)
        study_item.ReferencedSeriesSequence.append(item)
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([study_item])
    ds.ContentSequence = content
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UID(KOS), UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), sop_uid
