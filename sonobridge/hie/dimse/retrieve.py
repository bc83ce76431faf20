"""C-MOVE and C-GET: which instances an identifier names, and the presentation contexts to
send them in their stored transfer syntax (no needless decompression)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.presentation import PresentationContext, build_context
from sqlalchemy import select

from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import dicom_studies as ST

MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Stored:
    sop_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    raw = identifier.get(keyword)
    if raw is None or raw == "":
        return []
    values = raw if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue" \
        else str(raw).split("\\")
    return [str(v).strip() for v in values if str(v).strip()]


def matching(core: Any, identifier: Dataset) -> list[Stored]:
    """The stored instances named by a retrieve identifier (unique keys per level)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    stmt = select(I.c.sop_uid, I.c.study_uid, I.c.sop_class_uid, I.c.transfer_syntax,
                  I.c.blob_key)
    conds = []
    if level == "PATIENT":
        ids = _uids(identifier, "PatientID")
        if not ids:
            return []
        stmt = stmt.select_from(I.join(ST, ST.c.study_uid == I.c.study_uid))
        conds.append(ST.c.patient_id.in_(ids))
    for keyword, column in (("StudyInstanceUID", I.c.study_uid),
                            ("SeriesInstanceUID", I.c.series_uid),
                            ("SOPInstanceUID", I.c.sop_uid)):
        uids = _uids(identifier, keyword)
        if uids:
            conds.append(column.in_(uids))
    if not conds:
        return []
    with core.store.reader.connect() as conn:
        rows = conn.execute(stmt.where(*conds).order_by(I.c.study_uid, I.c.series_uid,
                                                        I.c.instance_number, I.c.id)).all()
    return [Stored(r.sop_uid, r.study_uid, r.sop_class_uid, r.transfer_syntax,
                   str(core.blobs.path(r.blob_key))) for r in rows]


def contexts_for(instances: list[Stored]) -> list[PresentationContext]:
    """One context per (SOP class, stored transfer syntax): an acceptor picks a single
    transfer syntax per context, so a JPEG cine and a native image of the same class need a
    context each. Up to 128, as the standard allows."""
    pairs: list[tuple[str, str]] = []
    for item in instances:
        pair = (item.sop_class_uid, item.transfer_syntax)
        if pair not in pairs:
            pairs.append(pair)
    return [build_context(sop_class, [syntax]) for sop_class, syntax in pairs[:MAX_CONTEXTS]]
