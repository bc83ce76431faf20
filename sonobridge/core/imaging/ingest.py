"""The one ingest path for DICOM instances: STOW-RS, C-STORE, ``sonobridge import`` and C-MOVE
retrieves all end here.

A received object is first written to a temporary file next to the blob store (bounded memory,
hashed on the way). The header is parsed there (no pixel data loaded), the frame table built,
the file moved to its content-addressed key, and the index rows, the DICOM JSON metadata and the
FHIR ImagingStudy written in one database transaction. A file that fails any step leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sonobridge.core.events import Events, InstanceStored
from sonobridge.core.imaging import codecs, indexing
from sonobridge.core.imaging.metadata import first, instance_json
from sonobridge.core.imaging.parse import DicomParseError, Parsed, has_preamble, parse
from sonobridge.core.imaging.studies import Studies
from sonobridge.core.policy import Caller
from sonobridge.store.blobs import BlobStore
from sonobridge.store.dicom import index
from sonobridge.store.resources import ResourceStore

log = logging.getLogger("sonobridge.dicom")

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
STORAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.", "1.2.840.10008.5.1.4.38.",
                    "1.2.840.10008.5.1.4.39.", "1.2.840.10008.5.1.4.43.",
                    "1.2.840.10008.5.1.4.44.", "1.2.840.10008.5.1.4.45.")
CHUNK = 1 << 20

# PS3.18 / PS3.4 failure reasons used in STOW-RS responses and C-STORE statuses.
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_MISMATCH = 0xC409
ELEMENTS_DISCARDED = 0xB006  # PS3.4 GG.4-1: a warning, the object is stored


@dataclass
class StoreOutcome:
    status: str  # stored | replaced | duplicate | failed
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: int | None = None
    message: str = ""
    # Stored, but with something the client should hear of (PS3.18 Warning Reason, C-STORE
    # warning status): values the metadata could not carry, SR items left unmapped.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class IngestError(Exception):
    def __init__(self, failure: int, message: str, dataset: Dataset | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.dataset = dataset


@dataclass
class Received:
    """An object written to a temporary file, with its size and SHA-256."""

    path: Path
    size: int
    sha256: str


class Receiver:
    """Writes incoming bytes to temporary files in the blob store's incoming folder."""

    def __init__(self, incoming: Path, max_size: int) -> None:
        self.incoming = incoming
        self.max_size = max_size
        incoming.mkdir(parents=True, exist_ok=True)

    def _open(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(prefix="recv-", suffix=".part", dir=self.incoming)
        return os.fdopen(fd, "wb"), Path(name)

    def receive(self, chunks: Iterable[bytes]) -> Received:
        out, path = self._open()
        digest, size = hashlib.sha256(), 0
        try:
            with out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise IngestError(OUT_OF_RESOURCES,
                                          f"object larger than {self.max_size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Received(path, size, digest.hexdigest())

    async def receive_async(self, chunks: AsyncIterable[bytes]) -> Received:
        out, path = self._open()
        digest, size = hashlib.sha256(), 0
        try:
            with out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise IngestError(OUT_OF_RESOURCES,
                                          f"object larger than {self.max_size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Received(path, size, digest.hexdigest())

    def from_file(self, source: Path) -> Received:
        with source.open("rb") as f:
            return self.receive(iter(lambda: f.read(CHUNK), b""))


def _valid_uid(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(UID_PATTERN.match(value))


def as_part10(received: Received, receiver: Receiver) -> Received:
    """A dataset without the Part 10 preamble (as some DICOMweb clients send) becomes a valid
    Part 10 file: preamble, file meta information, then the dataset bytes as received."""
    with received.path.open("rb") as f:
        head = f.read(132)
    if has_preamble(head):
        return received
    with received.path.open("rb") as f:
        try:
            header = dcmread(f, stop_before_pixels=True, force=True)
        except Exception as exc:  # pydicom raises many kinds on garbage
            raise IngestError(CANNOT_UNDERSTAND, f"not a DICOM dataset: {exc}") from None
    meta = getattr(header, "file_meta", None)
    body_start = 0
    if meta is not None and "TransferSyntaxUID" in meta and head[:2] == b"\x02\x00":
        buffer = BytesIO()
        buffer.write(b"\0" * 128 + b"DICM")
        prefix = buffer.getvalue()
    else:
        sop_class, sop_uid = header.get("SOPClassUID"), header.get("SOPInstanceUID")
        if not _valid_uid(str(sop_class or "")) or not _valid_uid(str(sop_uid or "")):
            raise IngestError(CANNOT_UNDERSTAND,
                              "not a DICOM dataset: no SOP Class and SOP Instance UID")
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = sop_class
        file_meta.MediaStorageSOPInstanceUID = sop_uid
        file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if header.is_implicit_VR \
            else ExplicitVRLittleEndian
        file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1455.1")
        file_meta.ImplementationVersionName = "SONOBRIDGE"
        buffer = BytesIO()
        buffer.write(b"\0" * 128 + b"DICM")
        # pydicom annotates ``fp: DicomIO`` but only calls ``fp.write``: any binary file works.
        write_file_meta_info(buffer, file_meta, enforce_standard=True)  # type: ignore[arg-type]
        prefix = buffer.getvalue()

    def chunks() -> Iterable[bytes]:
        yield prefix
        with received.path.open("rb") as f:
            f.seek(body_start)
            yield from iter(lambda: f.read(CHUNK), b"")

    try:
        return receiver.receive(chunks())
    finally:
        received.path.unlink(missing_ok=True)


def check(parsed: Parsed, expected_study: str | None) -> tuple[str, str, str, str]:
    """(sop class, sop instance, study, series) UIDs, or an IngestError with its reason."""
    ds = parsed.dataset
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    study = str(ds.get("StudyInstanceUID", "") or "")
    series = str(ds.get("SeriesInstanceUID", "") or "")
    for name, value in (("SOP Class UID", sop_class), ("SOP Instance UID", sop_uid),
                        ("Study Instance UID", study), ("Series Instance UID", series)):
        if not value:
            raise IngestError(CANNOT_UNDERSTAND, f"the dataset has no {name}", ds)
        if not _valid_uid(value):
            raise IngestError(CANNOT_UNDERSTAND, f"{name} {value!r} is not a valid UID", ds)
    meta = ds.file_meta
    if str(meta.get("MediaStorageSOPInstanceUID", sop_uid)) != sop_uid:
        raise IngestError(DATASET_MISMATCH, "file meta and dataset name different instances", ds)
    if not sop_class.startswith(STORAGE_PREFIXES):
        raise IngestError(SOP_CLASS_NOT_SUPPORTED,
                          f"SOP Class {sop_class} is not a storage SOP class", ds)
    if expected_study is not None and study != expected_study:
        raise IngestError(STUDY_MISMATCH, f"Study Instance UID {study} is not the study of the "
                          f"request ({expected_study})", ds)
    return sop_class, sop_uid, study, series


def check_geometry(parsed: Parsed, path: Path) -> None:
    """A compressed frame whose own header declares another size than Rows and Columns is
    refused: its decoder would allocate what the header says (a 1 KB object declaring a
    30000 x 30000 JPEG), and a viewer would show something else than the attributes
    describe."""
    pixels = parsed.pixels
    if pixels is None or not pixels.encapsulated or not pixels.frames or \
            not pixels.frames[0] or not codecs.readable(parsed.transfer_syntax):
        return
    offset, length = pixels.frames[0][0]
    with path.open("rb") as f:
        f.seek(offset)
        head = f.read(min(length, codecs.HEADER_BYTES))
    found = codecs.declared(parsed.transfer_syntax, head)
    ds = parsed.dataset
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        raise IngestError(CANNOT_UNDERSTAND, "Rows and Columns are not numbers", ds) from None
    if found is not None and (found.rows, found.columns) != (rows, columns):
        raise IngestError(CANNOT_UNDERSTAND, f"the first frame's codestream declares "
                          f"{found.columns} x {found.rows} pixels, Rows and Columns say "
                          f"{columns} x {rows}", ds)


def blob_key(study: str, series: str, sop: str, sha256: str) -> str:
    """Content-addressed: a replacement never overwrites the file it replaces."""
    return f"dicom/{study}/{series}/{sop}.{sha256[:16]}.dcm"


class Ingest:
    """``ingest(received)`` stores one object; the one ingest path."""

    def __init__(self, store: ResourceStore, blobs: BlobStore, studies: Studies,
                 events: Events, max_object_size: int) -> None:
        self.store = store
        self.blobs = blobs
        self.studies = studies
        self.events = events
        self.receiver = Receiver(blobs.scratch, max_object_size)

    def ingest(self, received: Received, caller: Caller, *, expected_study: str | None = None,
               source: str = "", deferred: set[str] | None = None) -> StoreOutcome:
        """Store one received object (the temporary file is consumed either way).

        With ``deferred``, the study's ImagingStudy is not rebuilt now: its UID is added to the
        set and the caller runs ``sync_studies`` once after the last object of a request, so
        storing a series of N instances rebuilds it once, not N times.
        """
        try:
            received = as_part10(received, self.receiver)
            with received.path.open("rb") as f:
                parsed = parse(f, received.size)
            sop_class, sop_uid, study, series = check(parsed, expected_study)
            check_geometry(parsed, received.path)
        except (IngestError, DicomParseError) as exc:
            received.path.unlink(missing_ok=True)
            failure = exc.failure if isinstance(exc, IngestError) else CANNOT_UNDERSTAND
            dataset = exc.dataset if isinstance(exc, IngestError) else None
            log.info("refused DICOM object from %s: %s", source or "?", exc)
            return StoreOutcome(
                "failed", _str(dataset, "SOPClassUID"), _str(dataset, "SOPInstanceUID"),
                _str(dataset, "StudyInstanceUID"), _str(dataset, "SeriesInstanceUID"), failure,
                str(exc))
        outcome = StoreOutcome("stored", sop_class, sop_uid, study, series)
        key = blob_key(study, series, sop_uid, received.sha256)
        blobs = self.blobs
        old_key: str | None = None
        try:
            with self.store.write() as writer:
                existing = index.instance(writer.conn, sop_uid)
                if existing is not None and existing.sha256 == received.sha256:
                    received.path.unlink(missing_ok=True)
                    outcome.status = "duplicate"
                    return outcome
                if existing is not None:
                    if existing.study_uid != study or existing.series_uid != series:
                        raise IngestError(DATASET_MISMATCH, f"instance {sop_uid} is already "
                                          "stored in another study or series")
                    outcome.status = "replaced"
                    old_key = existing.blob_key
                    log.info("replacing instance %s (was %s, now %s)", sop_uid,
                             existing.sha256[:16], received.sha256[:16])
                dropped: list[str] = []
                metadata = instance_json(parsed.dataset, study, series, sop_uid,
                                         parsed.transfer_syntax, _pixel_vr(parsed), dropped)
                if dropped:
                    outcome.warnings.append(
                        "values DICOM JSON cannot carry left out of its metadata (the object "
                        f"is stored whole): {', '.join(dropped[:10])}"
                        + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""))
                    log.warning("instance %s from %s: %s", sop_uid, source or "?",
                                outcome.warnings[-1])
                frames = None
                if parsed.pixels is not None:
                    frames = orjson.dumps(parsed.pixels.frames)
                index.upsert(writer.conn, writer.now,
                             indexing.instance_values(metadata, parsed, key, received.size,
                                                      received.sha256, frames),
                             indexing.series_values(metadata), indexing.study_values(metadata))
                if deferred is not None:
                    deferred.add(study)
                else:
                    self.studies.sync(writer, caller, study)
                if self.events.wants(InstanceStored):  # e.g. forwarding: queued with it
                    stored = InstanceStored(
                        writer, caller, sop_class, sop_uid, study, series,
                        str(first(metadata, "Modality") or ""), source, metadata,
                        new=existing is None)
                    self.events.emit(stored)
                    outcome.warnings += stored.warnings
                blobs.put_file(received.path, key)  # moved into place before the commit
            if old_key and old_key != key:
                blobs.delete(old_key)
        except IngestError as exc:
            received.path.unlink(missing_ok=True)
            return StoreOutcome("failed", sop_class, sop_uid, study, series, exc.failure,
                                str(exc))
        except Exception as exc:  # database or disk: nothing half-stored
            received.path.unlink(missing_ok=True)
            with contextlib.suppress(Exception), self.store.reader.connect() as conn:
                if not index.has_blob(conn, key):
                    blobs.delete(key)
            log.exception("could not store instance %s", sop_uid)
            return StoreOutcome("failed", sop_class, sop_uid, study, series,
                                PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}")
        return outcome

    def sync_studies(self, studies: set[str], caller: Caller) -> None:
        """Rebuild the ImagingStudy of each study (after a request's deferred ingests). A
        crash before this leaves the ImagingStudy stale; ``sonobridge reindex`` rebuilds it."""
        for study in sorted(studies):
            with self.store.write() as writer:
                self.studies.sync(writer, caller, study)
        studies.clear()


def _pixel_vr(parsed: Parsed) -> str | None:
    if parsed.pixels is None:
        return None
    if parsed.pixels.encapsulated:
        return "OB"
    bits = int(parsed.dataset.get("BitsAllocated", 8) or 8)
    return "OW" if bits > 8 else "OB"


def _str(dataset: Dataset | None, keyword: str) -> str | None:
    if dataset is None:
        return None
    value = dataset.get(keyword)
    return str(value) if value else None
