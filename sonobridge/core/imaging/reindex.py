"""Rebuilding everything derived from stored DICOM files: metadata, frame tables, index rows,
ImagingStudy resources (``sonobridge reindex``)."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from sonobridge.core.imaging import indexing
from sonobridge.core.imaging.ingest import _pixel_vr
from sonobridge.core.imaging.metadata import instance_json
from sonobridge.core.imaging.parse import parse
from sonobridge.core.imaging.studies import Studies
from sonobridge.core.policy import Caller
from sonobridge.store.blobs import BlobStore
from sonobridge.store.dicom import index
from sonobridge.store.resources import ResourceStore


def count_instances(store: ResourceStore) -> int:
    with store.reader.connect() as conn:
        return index.count_instances(conn)


def reindex_dicom(store: ResourceStore, blobs: BlobStore, studies: Studies, caller: Caller,
                  progress: Callable[[int], None] | None = None) -> int:
    """Re-read every stored file (a page of 200 at a time) and write its rows again; then
    rebuild each study's ImagingStudy once."""
    done, last = 0, 0
    touched: set[str] = set()
    while True:
        with store.reader.connect() as conn:
            rows = index.instance_page(conn, last, 200)
        if not rows:
            break
        for row_id, key, size, sha256 in rows:
            with blobs.open(key) as f:
                parsed = parse(f, size)
            ds = parsed.dataset
            study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                  str(ds.SOPInstanceUID))
            metadata = instance_json(ds, study, series, sop, parsed.transfer_syntax,
                                     _pixel_vr(parsed))
            frames = orjson.dumps(parsed.pixels.frames) if parsed.pixels else None
            with store.write() as writer:
                index.upsert(writer.conn, writer.now,
                             indexing.instance_values(metadata, parsed, key, size, sha256,
                                                      frames),
                             indexing.series_values(metadata), indexing.study_values(metadata))
            touched.add(study)
            last = row_id
        done += len(rows)
        if progress is not None:
            progress(len(rows))
    for study in sorted(touched):
        with store.write() as writer:
            studies.sync(writer, caller, study)
    return done
