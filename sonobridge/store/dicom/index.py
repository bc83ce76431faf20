"""The DICOM index rows: study, series and instance, with the attributes QIDO and C-FIND match
on, each instance's DICOM JSON metadata, blob key and frame table.

Rows only: the values come computed from the received object (``core/imaging/indexing.py``),
and the FHIR ImagingStudy kept in step with these rows is the core's (``core/imaging/
studies.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from sonobridge.store.normalize import normalize
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import dicom_series as S
from sonobridge.store.tables import dicom_studies as ST

PN_GROUPS = ("alphabetic", "ideographic", "phonetic")


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One stored instance as the index knows it."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    sha256: str
    number_of_frames: int | None
    received: int
    metadata: bytes
    frames: bytes | None  # the frame table (JSON), when there is pixel data
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None


_INSTANCE_COLUMNS = (I.c.sop_uid, I.c.series_uid, I.c.study_uid, I.c.sop_class_uid,
                     I.c.transfer_syntax, I.c.blob_key, I.c.size, I.c.sha256,
                     I.c.number_of_frames, I.c.received, I.c.metadata, I.c.frames,
                     I.c.instance_number, I.c.rows, I.c.columns)


def _stored(row: Row[*tuple[Any, ...]]) -> StoredInstance:
    return StoredInstance(
        row.sop_uid, row.series_uid, row.study_uid, row.sop_class_uid, row.transfer_syntax,
        row.blob_key, row.size, row.sha256, row.number_of_frames, row.received,
        bytes(row.metadata), bytes(row.frames) if row.frames is not None else None,
        row.instance_number, row.rows, row.columns)


def instance(conn: Connection, sop_uid: str, series_uid: str | None = None,
             study_uid: str | None = None) -> StoredInstance | None:
    stmt = select(*_INSTANCE_COLUMNS).where(I.c.sop_uid == sop_uid)
    if series_uid is not None:
        stmt = stmt.where(I.c.series_uid == series_uid)
    if study_uid is not None:
        stmt = stmt.where(I.c.study_uid == study_uid)
    row = conn.execute(stmt).first()
    return None if row is None else _stored(row)


def instances(conn: Connection, study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> list[StoredInstance]:
    """The instances of a study (series, instance), in series and instance number order."""
    stmt = select(*_INSTANCE_COLUMNS).where(I.c.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(I.c.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(I.c.sop_uid == sop_uid)
    stmt = stmt.order_by(I.c.series_uid, I.c.instance_number, I.c.id)
    return [_stored(row) for row in conn.execute(stmt)]


def metadata(conn: Connection, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> list[tuple[bytes, int]]:
    """(DICOM JSON, received) of the instances ``instances`` would list, in its order: the
    two columns a metadata request needs, not the whole row (600 instances: half the time)."""
    stmt = select(I.c.metadata, I.c.received).where(I.c.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(I.c.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(I.c.sop_uid == sop_uid)
    stmt = stmt.order_by(I.c.series_uid, I.c.instance_number, I.c.id)
    return [(bytes(row[0]), row[1]) for row in conn.execute(stmt)]


def retrieve_matches(conn: Connection, *, patient_ids: Sequence[str] = (),
                     study_uids: Sequence[str] = (), series_uids: Sequence[str] = (),
                     sop_uids: Sequence[str] = ()) -> list[StoredInstance]:
    """The instances a C-MOVE/C-GET identifier names (each list, when given, must match)."""
    stmt = select(*_INSTANCE_COLUMNS)
    conds = []
    if patient_ids:
        stmt = stmt.select_from(I.join(ST, ST.c.study_uid == I.c.study_uid))
        conds.append(ST.c.patient_id.in_(list(patient_ids)))
    for uids, column in ((study_uids, I.c.study_uid), (series_uids, I.c.series_uid),
                         (sop_uids, I.c.sop_uid)):
        if uids:
            conds.append(column.in_(list(uids)))
    if not conds:
        return []
    stmt = stmt.where(*conds).order_by(I.c.study_uid, I.c.series_uid, I.c.instance_number,
                                       I.c.id)
    return [_stored(row) for row in conn.execute(stmt)]


def has_blob(conn: Connection, key: str) -> bool:
    return conn.execute(select(I.c.id).where(I.c.blob_key == key)).first() is not None


def has_study(conn: Connection, study_uid: str) -> bool:
    return conn.execute(select(ST.c.id).where(ST.c.study_uid == study_uid)).first() \
        is not None


def studies_of_series(conn: Connection, series_uids: Sequence[str]) -> list[str]:
    if not series_uids:
        return []
    rows = conn.execute(select(S.c.study_uid).where(S.c.series_uid.in_(list(series_uids))))
    return sorted({row.study_uid for row in rows})


def count_instances(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(I)).scalar_one())


def instance_page(conn: Connection, after: int, size: int) -> list[tuple[int, str, int, str]]:
    """(row id, blob key, size, sha256) of the instances past ``after`` (for ``reindex``)."""
    rows = conn.execute(select(I.c.id, I.c.blob_key, I.c.size, I.c.sha256).where(
        I.c.id > after).order_by(I.c.id).limit(size)).all()
    return [(row.id, row.blob_key, row.size, row.sha256) for row in rows]


# --------------------------------------------------------------------------- person names


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


def name_groups(column: str, name: str | None) -> dict[str, str | None]:
    """``Zhang^Wei=张^伟`` -> the ``{column}_alphabetic``, ``_ideographic`` and ``_phonetic``
    values: each component group is matched on its own."""
    parts = [*(name or "").split("="), "", ""][:3]
    return {f"{column}_{group}": clip(part, 324) for group, part in zip(PN_GROUPS, parts,
                                                                        strict=True)}


def clip(value: object, size: int) -> str | None:
    return None if value in (None, "") else str(value)[:size]


# --------------------------------------------------------------------------- writes


def upsert(conn: Connection, now: int, instance_values: dict[str, Any],
           series_values: dict[str, Any], study_values: dict[str, Any]) -> None:
    """Insert or replace an instance's row, then bring its series and study rows up to date
    (counts from the rows; attributes from this, the latest, instance)."""
    sop_uid = instance_values["sop_uid"]
    series_uid = instance_values["series_uid"]
    study_uid = instance_values["study_uid"]
    values = {**instance_values, "received": now}
    if conn.execute(select(I.c.id).where(I.c.sop_uid == sop_uid)).first() is None:
        conn.execute(insert(I).values(**values))
    else:
        conn.execute(update(I).where(I.c.sop_uid == sop_uid).values(**values))
    series = {
        **series_values, "study_uid": study_uid, "updated": now,
        "num_instances": select(func.count()).select_from(I).where(
            I.c.series_uid == series_uid).scalar_subquery(),
    }
    if conn.execute(select(S.c.id).where(S.c.series_uid == series_uid)).first() is None:
        conn.execute(insert(S).values(series_uid=series_uid, **series))
    else:
        conn.execute(update(S).where(S.c.series_uid == series_uid).values(**series))
    refresh_study(conn, study_uid, study_values, now)


def refresh_study(conn: Connection, study_uid: str, values: dict[str, Any] | None,
                  now: int) -> None:
    """Counts and modalities from the series rows; ``values`` (the study's attributes) from
    the latest instance, or ``None`` to keep them."""
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
    exists = has_study(conn, study_uid)
    if values is None:
        if exists:
            conn.execute(update(ST).where(ST.c.study_uid == study_uid).values(**counts))
        return
    if not exists:
        conn.execute(insert(ST).values(study_uid=study_uid, **counts, **values))
    else:
        conn.execute(update(ST).where(ST.c.study_uid == study_uid).values(**counts, **values))


def remove(conn: Connection, now: int, *, study_uid: str, series_uid: str | None = None,
           sop_uid: str | None = None) -> list[str]:
    """Delete index rows; returns the blob keys to delete after the commit."""
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
                num_instances=remaining, updated=now))
        else:
            conn.execute(delete(S).where(S.c.series_uid == series))
    left = conn.execute(select(func.count()).select_from(I).where(
        I.c.study_uid == study_uid)).scalar_one()
    if left:
        refresh_study(conn, study_uid, None, now)
    else:
        conn.execute(delete(ST).where(ST.c.study_uid == study_uid))
    return [row.blob_key for row in rows]


# --------------------------------------------------------------------------- ImagingStudy


@dataclass(frozen=True, slots=True)
class StudySummary:
    """What the ImagingStudy of a study is made from: the study's attributes, and per series
    its attributes and instances (uid, class, number, frames)."""

    study_uid: str
    attrs: bytes
    series: list[tuple[str, bytes, list[tuple[str, str, int | None, int | None]]]]


def study_summary(conn: Connection, study_uid: str) -> StudySummary | None:
    study = conn.execute(select(ST.c.attrs, ST.c.num_instances).where(
        ST.c.study_uid == study_uid)).first()
    if study is None or study.num_instances == 0:
        return None
    series_rows = conn.execute(select(S.c.series_uid, S.c.attrs).where(
        S.c.study_uid == study_uid).order_by(S.c.series_number, S.c.id)).all()
    instance_rows = conn.execute(select(
        I.c.series_uid, I.c.sop_uid, I.c.sop_class_uid, I.c.instance_number,
        I.c.number_of_frames).where(I.c.study_uid == study_uid).order_by(
        I.c.instance_number, I.c.id)).all()
    by_series: dict[str, list[tuple[str, str, int | None, int | None]]] = {}
    for row in instance_rows:
        by_series.setdefault(row.series_uid, []).append(
            (row.sop_uid, row.sop_class_uid, row.instance_number, row.number_of_frames))
    series = [(row.series_uid, bytes(row.attrs), by_series[row.series_uid])
              for row in series_rows if by_series.get(row.series_uid)]
    return StudySummary(study_uid, bytes(study.attrs), series)
