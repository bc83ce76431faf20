"""Rebuilding everything derived from stored DICOM files: metadata, frame tables, index rows,
ImagingStudy resources (``sonobridge reindex``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import func, select

from sonobridge.core.imaging.ingest import _pixel_vr
from sonobridge.core.imaging.metadata import instance_json
from sonobridge.core.imaging.parse import parse
from sonobridge.store.dicom import index
from sonobridge.store.tables import dicom_instances as I


def count_instances(core: Any) -> int:
    with core.store.reader.connect() as conn:
        return conn.execute(select(func.count()).select_from(I)).scalar_one()


def reindex_dicom(core: Any, progress: Callable[[int], None] | None = None) -> int:
    done, last = 0, 0
    while True:
        with core.store.reader.connect() as conn:
            rows = conn.execute(select(I.c.id, I.c.blob_key, I.c.size, I.c.sha256).where(
                I.c.id > last).order_by(I.c.id).limit(200)).all()
        if not rows:
            return done
        for row in rows:
            path = core.blobs.path(row.blob_key)
            with open(path, "rb") as f:
                parsed = parse(f, row.size)
            ds = parsed.dataset
            study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                  str(ds.SOPInstanceUID))
            metadata = instance_json(ds, study, series, sop, parsed.transfer_syntax,
                                     _pixel_vr(parsed))
            frames = orjson.dumps(parsed.pixels.frames) if parsed.pixels else None
            with core.store.write() as writer:
                index.upsert(writer, core, metadata, parsed, row.blob_key, row.size,
                             row.sha256, frames)
            last = row.id
        done += len(rows)
        if progress is not None:
            progress(len(rows))
