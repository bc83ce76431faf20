"""The index row values of a received instance, from its header and DICOM JSON metadata: what
QIDO and C-FIND match on at each level, clipped to the columns' sizes."""

from __future__ import annotations

from typing import Any

import orjson

from sonobridge.core.imaging.metadata import SERIES_TAGS, STUDY_TAGS, first, pick
from sonobridge.core.imaging.parse import Parsed
from sonobridge.store.dicom.index import clip, name_groups, name_tokens


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def instance_values(metadata: dict[str, Any], parsed: Parsed, key: str, size: int,
                    sha256: str, frames: bytes | None) -> dict[str, Any]:
    ds = parsed.dataset
    return {
        "sop_uid": str(ds.SOPInstanceUID), "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(ds.StudyInstanceUID), "sop_class_uid": str(ds.SOPClassUID),
        "instance_number": _int(ds.get("InstanceNumber")),
        "transfer_syntax": parsed.transfer_syntax, "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "number_of_frames": _int(ds.get("NumberOfFrames")) or (1 if parsed.pixels else None),
        "blob_key": key, "size": size, "sha256": sha256,
        "metadata": orjson.dumps(metadata), "frames": frames,
    }


def series_values(metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "modality": clip(first(metadata, "Modality"), 16),
        "series_number": _int(first(metadata, "SeriesNumber")),
        "series_description": clip(first(metadata, "SeriesDescription"), 64),
        "series_date": clip(first(metadata, "SeriesDate"), 8),
        "series_time": clip(first(metadata, "SeriesTime"), 16),
        "body_part": clip(first(metadata, "BodyPartExamined"), 16),
        "attrs": orjson.dumps(pick(metadata, SERIES_TAGS)),
    }


def study_values(metadata: dict[str, Any]) -> dict[str, Any]:
    attrs = pick(metadata, STUDY_TAGS, patient=True)
    name = first(attrs, "PatientName")
    return {
        "patient_id": clip(first(attrs, "PatientID"), 64),
        "patient_name": clip(name, 324), "patient_name_norm": clip(name_tokens(name), 324),
        **name_groups("patient_name", name),
        "patient_birth_date": clip(first(attrs, "PatientBirthDate"), 8),
        "patient_sex": clip(first(attrs, "PatientSex"), 16),
        "study_date": clip(first(attrs, "StudyDate"), 8),
        "study_time": clip(first(attrs, "StudyTime"), 16),
        "accession_number": clip(first(attrs, "AccessionNumber"), 64),
        "study_id": clip(first(attrs, "StudyID"), 16),
        "study_description": clip(first(attrs, "StudyDescription"), 64),
        "referring_physician": clip(first(attrs, "ReferringPhysicianName"), 324),
        "attrs": orjson.dumps(attrs),
    }
