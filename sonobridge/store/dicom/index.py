"""The DICOM index rows (study, series, instance), kept in step with the FHIR ImagingStudy."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select, update

from sonobridge.core.imaging.metadata import SERIES_TAGS, STUDY_TAGS, first, pick
from sonobridge.core.imaging.parse import Parsed
from sonobridge.mappings.hl7v2 import identifier_system
from sonobridge.mappings.imaging_study import (
    InstanceSummary,
    SeriesSummary,
    imaging_study,
    patient_from_dicom,
)
from sonobridge.store.normalize import normalize
from sonobridge.store.resources import Writer
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import dicom_series as S
from sonobridge.store.tables import dicom_studies as ST

ENDPOINT_ID = "sonobridge-dicomweb"


def instance_row(conn: Connection, sop_uid: str) -> Any:
    return conn.execute(select(I).where(I.c.sop_uid == sop_uid)).first()


def has_blob(core: Any, key: str) -> bool:
    with core.store.reader.connect() as conn:
        return conn.execute(select(I.c.id).where(I.c.blob_key == key)).first() is not None


def name_tokens(name: str | None) -> str | None:
    """``Wang^Wei=王^伟`` -> ``|wang|wei|王|伟|``: each name component, normalised, for
    accent-insensitive prefix matching per component (QIDO ``fuzzymatching``)."""
    if not name:
        return None
    parts = []
    for group in name.split("="):
        for component in group.split("^"):
            for word in component.replace(",", " ").split():
                token = normalize(word)
                if token:
                    parts.append(token)
    return "|" + "|".join(parts) + "|" if parts else None


PN_GROUPS = ("alphabetic", "ideographic", "phonetic")


def name_groups(column: str, name: str | None) -> dict[str, str | None]:
    """``Zhang^Wei=张^伟`` -> the ``{column}_alphabetic``, ``_ideographic`` and ``_phonetic``
    values: each component group is matched on its own."""
    parts = [*(name or "").split("="), "", ""][:3]
    return {f"{column}_{group}": _clip(part, 324) for group, part in zip(PN_GROUPS, parts,
                                                                         strict=True)}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _clip(value: Any, size: int) -> str | None:
    return None if value in (None, "") else str(value)[:size]


def upsert(writer: Writer, core: Any, metadata: dict[str, Any], parsed: Parsed, key: str,
           size: int, sha256: str, frames: bytes | None, *, sync: bool = True) -> None:
    conn = writer.conn
    ds = parsed.dataset
    sop_uid, series_uid, study_uid = (str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID),
                                      str(ds.StudyInstanceUID))
    now = writer.now
    values = {
        "sop_uid": sop_uid, "series_uid": series_uid, "study_uid": study_uid,
        "sop_class_uid": str(ds.SOPClassUID), "instance_number": _int(ds.get("InstanceNumber")),
        "transfer_syntax": parsed.transfer_syntax, "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "number_of_frames": _int(ds.get("NumberOfFrames")) or (1 if parsed.pixels else None),
        "blob_key": key, "size": size, "sha256": sha256, "received": now,
        "metadata": orjson.dumps(metadata), "frames": frames,
    }
    if instance_row(conn, sop_uid) is None:
        conn.execute(insert(I).values(**values))
    else:
        conn.execute(update(I).where(I.c.sop_uid == sop_uid).values(**values))
    series_attrs = pick(metadata, SERIES_TAGS)
    series_values = {
        "study_uid": study_uid, "modality": _clip(first(metadata, "Modality"), 16),
        "series_number": _int(first(metadata, "SeriesNumber")),
        "series_description": _clip(first(metadata, "SeriesDescription"), 64),
        "series_date": _clip(first(metadata, "SeriesDate"), 8),
        "series_time": _clip(first(metadata, "SeriesTime"), 16),
        "body_part": _clip(first(metadata, "BodyPartExamined"), 16),
        "updated": now, "attrs": orjson.dumps(series_attrs),
        "num_instances": select(func.count()).select_from(I).where(
            I.c.series_uid == series_uid).scalar_subquery(),
    }
    if conn.execute(select(S.c.id).where(S.c.series_uid == series_uid)).first() is None:
        conn.execute(insert(S).values(series_uid=series_uid, **series_values))
    else:
        conn.execute(update(S).where(S.c.series_uid == series_uid).values(**series_values))
    refresh_study(conn, study_uid, pick(metadata, STUDY_TAGS, patient=True), now)
    if sync:
        sync_imaging_study(writer, core, study_uid)


def refresh_study(conn: Connection, study_uid: str, attrs: dict[str, Any] | None,
                  now: int) -> None:
    """Counts and modalities from the series rows; attributes from the latest instance."""
    modalities = sorted({m for (m,) in conn.execute(
        select(S.c.modality).where(S.c.study_uid == study_uid)).all() if m})
    counts = {
        "num_series": select(func.count()).select_from(S).where(
            S.c.study_uid == study_uid).scalar_subquery(),
        "num_instances": select(func.count()).select_from(I).where(
            I.c.study_uid == study_uid).scalar_subquery(),
        "modalities": f"|{'|'.join(modalities)}|"[:128] if modalities else None,
        "updated": now,
    }
    exists = conn.execute(select(ST.c.id).where(ST.c.study_uid == study_uid)).first()
    if attrs is None:
        if exists is not None:
            conn.execute(update(ST).where(ST.c.study_uid == study_uid).values(**counts))
        return
    name = first(attrs, "PatientName")
    values = {
        **counts,
        "patient_id": _clip(first(attrs, "PatientID"), 64),
        "patient_name": _clip(name, 324), "patient_name_norm": _clip(name_tokens(name), 324),
        **name_groups("patient_name", name),
        "patient_birth_date": _clip(first(attrs, "PatientBirthDate"), 8),
        "patient_sex": _clip(first(attrs, "PatientSex"), 16),
        "study_date": _clip(first(attrs, "StudyDate"), 8),
        "study_time": _clip(first(attrs, "StudyTime"), 16),
        "accession_number": _clip(first(attrs, "AccessionNumber"), 64),
        "study_id": _clip(first(attrs, "StudyID"), 16),
        "study_description": _clip(first(attrs, "StudyDescription"), 64),
        "referring_physician": _clip(first(attrs, "ReferringPhysicianName"), 324),
        "attrs": orjson.dumps(attrs),
    }
    if exists is None:
        conn.execute(insert(ST).values(study_uid=study_uid, **values))
    else:
        conn.execute(update(ST).where(ST.c.study_uid == study_uid).values(**values))


def sync_imaging_study(writer: Writer, core: Any, study_uid: str) -> None:
    """Create, update or delete the ImagingStudy for a study, from the index rows."""
    conn = writer.conn
    study = conn.execute(select(ST).where(ST.c.study_uid == study_uid)).first()
    if study is None or study.num_instances == 0:
        if writer.read("ImagingStudy", study_uid) is not None:
            writer.delete("ImagingStudy", study_uid)
        return
    attrs = orjson.loads(study.attrs)
    series_rows = conn.execute(select(S.c.series_uid, S.c.attrs).where(
        S.c.study_uid == study_uid).order_by(S.c.series_number, S.c.id)).all()
    instance_rows = conn.execute(select(
        I.c.series_uid, I.c.sop_uid, I.c.sop_class_uid, I.c.instance_number,
        I.c.number_of_frames).where(I.c.study_uid == study_uid).order_by(
        I.c.instance_number, I.c.id)).all()
    by_series: dict[str, list[InstanceSummary]] = {}
    for row in instance_rows:
        by_series.setdefault(row.series_uid, []).append(InstanceSummary(
            row.sop_uid, row.sop_class_uid, row.instance_number, row.number_of_frames))
    series = [SeriesSummary(row.series_uid, orjson.loads(row.attrs),
                            by_series.get(row.series_uid, [])) for row in series_rows
              if by_series.get(row.series_uid)]
    settings = core.settings
    patient_ref = _patient(writer, core, attrs)
    based_on = _orders(writer, core, study_uid, attrs)
    _endpoint(writer, settings)
    resource = imaging_study(study_uid, attrs, series, patient_ref=patient_ref,
                             endpoint_ref=f"Endpoint/{ENDPOINT_ID}", based_on=based_on)
    writer.update("ImagingStudy", study_uid, resource)


def _patient(writer: Writer, core: Any, attrs: dict[str, Any]) -> str | None:
    patient_id = first(attrs, "PatientID")
    if not patient_id:
        return None
    system = core.settings.dicom_patient_id_system
    # With an Issuer of Patient ID the ID is the HIS's own, under that authority (the one the
    # worklist gave the modality), and matched only there: "123" of another authority is
    # another patient. Without one, the DICOM Patient ID domain.
    issuers = _issuer_systems(attrs)

    def holder(candidate: str) -> str | None:
        found = core.fhir.find(writer, "Patient", [("identifier", f"{candidate}|{patient_id}")],
                               core.settings.public_base, limit=2)
        return found[0] if found else None

    for candidate in issuers or [system]:
        found = holder(candidate)
        if found:
            return f"Patient/{found}"
    patient = patient_from_dicom(attrs, system)
    if issuers:
        own = [{"system": candidate, "value": str(patient_id)} for candidate in issuers]
        patient["identifier"] = own + (patient["identifier"] if holder(system) is None else [])
    stored = writer.create("Patient", patient)
    return f"Patient/{stored.id}"


def _issuer_systems(attrs: dict[str, Any]) -> list[str]:
    """Identifier systems of the Patient ID's issuer: its ISO OID from the Issuer of Patient ID
    Qualifiers Sequence (0010,0024), and its local namespace (0010,0021)."""
    systems = []
    for item in (attrs.get("00100024") or {}).get("Value") or []:
        universal = ((item.get("00400032") or {}).get("Value") or [""])[0]
        kind = ((item.get("00400033") or {}).get("Value") or [""])[0]
        if universal and kind in ("ISO", ""):
            systems.append(f"urn:oid:{universal}")
    issuer = first(attrs, "IssuerOfPatientID")
    if issuer:
        systems.append(identifier_system([str(issuer)]))
    return systems


def _orders(writer: Writer, core: Any, study_uid: str, attrs: dict[str, Any]) -> list[str]:
    """The orders a study was performed for: the one its accession number names, and those
    of the procedure steps (MPPS Tasks) that say they performed it. Both are looked up at
    every sync, so the link holds whichever came first, the images or the MPPS."""
    base = core.settings.public_base
    orders: list[str] = []
    accession = first(attrs, "AccessionNumber")
    if accession:
        found = core.fhir.find(writer, "ServiceRequest", [("identifier", str(accession))],
                               base, limit=2)
        if len(found) == 1:
            orders.append(f"ServiceRequest/{found[0]}")
    for task_id in core.fhir.find(writer, "Task", [("output", f"ImagingStudy/{study_uid}")],
                                  base, limit=100):
        stored = writer.read("Task", task_id)
        if stored is None or stored.deleted or stored.content is None:
            continue
        for ref in orjson.loads(stored.content).get("basedOn", []):
            reference = ref.get("reference", "")
            if reference.startswith("ServiceRequest/") and reference not in orders:
                orders.append(reference)
    return orders


def _endpoint(writer: Writer, settings: Any) -> None:
    if writer.read("Endpoint", ENDPOINT_ID) is not None:
        return
    writer.update("Endpoint", ENDPOINT_ID, {
        "resourceType": "Endpoint", "id": ENDPOINT_ID, "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs"},
        "name": "SonoBridge DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": f"{settings.public_base.rsplit('/fhir', 1)[0]}/dicomweb",
    })


def remove(writer: Writer, core: Any, *, study_uid: str, series_uid: str | None = None,
           sop_uid: str | None = None) -> list[str]:
    """Delete index rows; returns the blob keys to delete after the commit."""
    conn = writer.conn
    condition = I.c.study_uid == study_uid
    if series_uid:
        condition = condition & (I.c.series_uid == series_uid)
    if sop_uid:
        condition = condition & (I.c.sop_uid == sop_uid)
    rows = conn.execute(select(I.c.blob_key, I.c.series_uid).where(condition)).all()
    if not rows:
        return []
    conn.execute(delete(I).where(condition))
    for series in {row.series_uid for row in rows}:
        remaining = conn.execute(select(func.count()).select_from(I).where(
            I.c.series_uid == series)).scalar_one()
        if remaining:
            conn.execute(update(S).where(S.c.series_uid == series).values(
                num_instances=remaining, updated=writer.now))
        else:
            conn.execute(delete(S).where(S.c.series_uid == series))
    left = conn.execute(select(func.count()).select_from(I).where(
        I.c.study_uid == study_uid)).scalar_one()
    if left:
        refresh_study(conn, study_uid, None, writer.now)
    else:
        conn.execute(delete(ST).where(ST.c.study_uid == study_uid))
    sync_imaging_study(writer, core, study_uid)
    return [row.blob_key for row in rows]
