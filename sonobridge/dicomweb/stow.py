"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related.

Each part streams to a temporary file and is stored by the one ingest path as soon as it is
complete, so memory stays bounded however large the request. Two forms: ``application/dicom``
parts (Part 10 files, or datasets without the preamble), and the metadata form: an
``application/dicom+json`` part whose BulkDataURIs name other parts (``image/jpeg`` frames,
``application/octet-stream`` native pixels) by Content-Location.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sonobridge.core.imaging.ingest import (
    CANNOT_UNDERSTAND,
    ELEMENTS_DISCARDED,
    Ingest,
    IngestError,
    Received,
    StoreOutcome,
)
from sonobridge.core.policy import Caller
from sonobridge.dicomweb.accept import content_type
from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.multipart import IncomingPart, PartSink, read_parts

if TYPE_CHECKING:
    from sonobridge.dicomweb.routes import DicomWebApp

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"


class _Sink(PartSink):
    """Writes each part to a temporary file; ``received`` has them in order."""

    def __init__(self, incoming: Path, max_size: int) -> None:
        self.incoming = incoming
        self.max_size = max_size
        self.received: list[tuple[IncomingPart, Received]] = []
        self._file: Any = None
        self._path: Path | None = None
        self._hash: Any = None
        self._size = 0

    def begin(self, part: IncomingPart) -> Callable[[bytes], None]:
        fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.incoming)
        self._file, self._path = os.fdopen(fd, "wb"), Path(name)
        self._hash, self._size = hashlib.sha256(), 0
        return self._write

    def _write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.max_size:
            raise DicomwebError(413, f"a part is larger than {self.max_size} bytes")
        self._hash.update(data)
        self._file.write(data)

    def end(self, part: IncomingPart) -> None:
        self._file.close()
        assert self._path is not None
        part.payload = Received(self._path, self._size, self._hash.hexdigest())
        self.received.append((part, part.payload))
        self._file = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            if self._path is not None:
                self._path.unlink(missing_ok=True)
        for _, received in self.received:
            received.path.unlink(missing_ok=True)


async def stow(app: DicomWebApp, request: Request, study: str | None) -> Response:
    media = content_type(request.headers.get("content-type"))
    if media is None or media.media != "multipart/related":
        raise DicomwebError(415, "STOW-RS takes multipart/related; type=\"application/dicom\" "
                            "(or application/dicom+json with bulk data parts)")
    boundary = media.params.get("boundary")
    if not boundary:
        raise DicomwebError(400, "the multipart/related Content-Type has no boundary")
    part_type = (media.part_type or DICOM).lower()
    if part_type not in (DICOM, DICOM_JSON):
        raise DicomwebError(415, f"STOW-RS parts of type {part_type} are not supported")
    ingest = app.core.ingest
    caller: Caller = request.state.caller
    sink = _Sink(ingest.receiver.incoming, ingest.receiver.max_size)
    outcomes: list[StoreOutcome] = []
    deferred: set[str] = set()  # studies whose ImagingStudy is rebuilt once, at the end

    async def store_part(part: IncomingPart) -> None:
        if part_type != DICOM:
            return  # the metadata form needs every part first
        received = part.payload
        sink.received = [(p, r) for p, r in sink.received if r is not received]
        kind = part.content_type.split(";")[0].strip().lower()
        if kind not in (DICOM, "application/octet-stream"):
            received.path.unlink(missing_ok=True)
            outcomes.append(StoreOutcome("failed", failure=CANNOT_UNDERSTAND,
                                         message=f"a part of type {kind} in an "
                                                 "application/dicom request"))
            return
        outcomes.append(await app._run(_ingest, ingest, caller, received, study, deferred))

    try:
        count = await read_parts(request.stream(), boundary, sink, store_part)
        if part_type == DICOM_JSON:
            outcomes = await app._run(_store_metadata_form, ingest, caller, sink.received,
                                      study)
            sink.received = []
    except ClientDisconnect:
        sink.discard()
        return Response(b"", 400)
    except BaseException:
        sink.discard()
        raise
    finally:
        if deferred:
            await app._run(ingest.sync_studies, deferred, caller)
    if count == 0:
        raise DicomwebError(400, "the request holds no parts")
    return _response(app.root(request), outcomes)


def _ingest(ingest: Ingest, caller: Caller, received: Received, study: str | None,
            deferred: set[str]) -> StoreOutcome:
    return ingest.ingest(received, caller, expected_study=study, source="STOW-RS",
                         deferred=deferred)


def _store_metadata_form(ingest: Ingest, caller: Caller,
                         parts: list[tuple[IncomingPart, Received]],
                         study: str | None) -> list[StoreOutcome]:
    """Datasets from the JSON part(s), bulk data from the others, each stored as Part 10."""
    by_location: dict[str, tuple[str, Path]] = {}
    datasets: list[dict[str, Any]] = []
    try:
        for part, received in parts:
            kind = part.content_type.split(";")[0].strip().lower()
            if kind in (DICOM_JSON, "application/json"):
                try:
                    data = orjson.loads(received.path.read_bytes())
                except orjson.JSONDecodeError as exc:
                    raise DicomwebError(400, f"the metadata part is not JSON: {exc}") from None
                datasets += data if isinstance(data, list) else [data]
            else:
                location = part.headers.get("content-location") or \
                    part.headers.get("content-id", "").strip("<>")
                by_location[location] = (kind, received.path)
        outcomes = []
        for data in datasets:
            try:
                outcomes.append(_store_one(ingest, caller, data, by_location, study))
            except IngestError as exc:
                outcomes.append(StoreOutcome("failed", failure=exc.failure, message=str(exc)))
        return outcomes
    finally:
        for _, received in parts:
            received.path.unlink(missing_ok=True)


def _store_one(ingest: Ingest, caller: Caller, data: dict[str, Any],
               parts: dict[str, tuple[str, Path]], study: str | None) -> StoreOutcome:
    pixel = data.pop("7FE00010", None)

    def bulk(tag: str, vr: str, uri: str) -> bytes:
        if uri not in parts:
            raise IngestError(CANNOT_UNDERSTAND, f"BulkDataURI {uri!r} names no part")
        return parts[uri][1].read_bytes()

    try:
        ds = Dataset.from_json(data, bulk_data_uri_handler=bulk)
    except IngestError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed JSON datasets
        raise IngestError(CANNOT_UNDERSTAND, f"the metadata cannot be read: {exc}") from None
    syntax = ExplicitVRLittleEndian
    if pixel is not None:
        uri = pixel.get("BulkDataURI")
        if not uri or uri not in parts:
            raise IngestError(CANNOT_UNDERSTAND, "PixelData names no bulk data part")
        kind, path = parts[uri]
        if kind in ("image/jpeg",):
            ds.PixelData = encapsulate([path.read_bytes()])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            syntax = JPEGBaseline8Bit
        elif kind == "application/octet-stream":
            ds.PixelData = path.read_bytes()
            ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
        else:
            raise IngestError(CANNOT_UNDERSTAND, f"pixel data of type {kind} is not supported")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    buffer = BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise IngestError(CANNOT_UNDERSTAND, f"the dataset cannot be written: {exc}") from None
    received = ingest.receiver.receive([buffer.getvalue()])
    return ingest.ingest(received, caller, expected_study=study, source="STOW-RS")


def _response(root: str, outcomes: list[StoreOutcome]) -> Response:
    referenced, failed = [], []
    for outcome in outcomes:
        item: dict[str, Any] = {}
        if outcome.sop_class_uid:
            item["00081150"] = {"vr": "UI", "Value": [outcome.sop_class_uid]}
        if outcome.sop_instance_uid:
            item["00081155"] = {"vr": "UI", "Value": [outcome.sop_instance_uid]}
        if outcome.ok:
            item["00081190"] = {"vr": "UR", "Value": [
                f"{root}/studies/{outcome.study_uid}/series/{outcome.series_uid}/instances/"
                f"{outcome.sop_instance_uid}"]}
            if outcome.warnings:  # PS3.18 10.5.3: stored with a Warning Reason
                item["00081196"] = {"vr": "US", "Value": [ELEMENTS_DISCARDED]}
            referenced.append(item)
        else:
            item["00081197"] = {"vr": "US", "Value": [outcome.failure or 0x0110]}
            failed.append(item)
    body: dict[str, Any] = {}
    studies = {o.study_uid for o in outcomes if o.ok and o.study_uid}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{studies.pop()}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    warned = [o for o in outcomes if o.ok and o.warnings]
    # PS3.18 Table 10.5.3-2: 202 when some failed or were stored with warnings.
    status = 409 if failed and not referenced else (202 if failed or warned else 200)
    response = Response(orjson.dumps(body), status, media_type="application/dicom+json")
    # PS3.18 8.10.3: why each instance failed, in Warning headers (the Failed SOP Sequence
    # carries only a code); bounded, so a thousand failures do not make a huge header block.
    reasons = [(o, o.message) for o in outcomes if not o.ok and o.message]
    reasons += [(o, text) for o in warned for text in o.warnings]
    for outcome, text in reasons[:_MAX_WARNINGS]:
        response.headers.append("Warning", _warning(outcome, text))
    return response


_MAX_WARNINGS = 20


def _warning(outcome: StoreOutcome, message: str) -> str:
    text = f"{outcome.sop_instance_uid or 'an instance'}: {message}"
    text = "".join(c if " " <= c <= "~" else "?" for c in text)  # no CR/LF, ASCII only
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 SonoBridge "{text[:400]}"'

