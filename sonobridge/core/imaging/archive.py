"""The DICOM archive: what is stored, found and served, whichever protocol asks.

QIDO-RS and C-FIND share one query (``query.py``); WADO-RS, WADO-URI, C-GET and C-MOVE read
the stored bytes through the blob store (a frame is one ranged read through the frame table
built at ingest) and convert through the one streaming transcoder (``transcode.py``);
renderings are made from decoded frames (``render.py``) and kept in a bounded cache.
Everything here is blocking work the edges run in threads.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset

from sonobridge.core.errors import CoreError, bad_request, not_acceptable, not_found
from sonobridge.core.events import InstanceDeleted
from sonobridge.core.imaging import codecs, transcode
from sonobridge.core.imaging import frames as F
from sonobridge.core.imaging import query as qido
from sonobridge.core.imaging import render as rendered
from sonobridge.core.imaging.cache import FrameCache
from sonobridge.core.imaging.metadata import BASE_BYTES, VIDEO_SYNTAXES
from sonobridge.core.imaging.studies import Studies
from sonobridge.core.limits import Budget, Limits
from sonobridge.core.policy import Caller
from sonobridge.store.blobs import BlobStore
from sonobridge.store.dicom import index
from sonobridge.store.dicom.index import StoredInstance
from sonobridge.store.resources import ResourceStore

BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _what(study: str, series: str | None, sop: str | None) -> str:
    return f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"


# Rendered videos are kept on disk for the Range requests that follow (a browser's <video>
# asks for the file in pieces, and seeks); the oldest go beyond this size.
RENDERED_BYTES = 1 << 30


def is_video(row: StoredInstance, media: str, frame: int | None) -> bool:
    """Whether a rendering of ``row`` is a video (every frame of a cine, or a video)."""
    return (media in ("video/mp4", "image/gif") and frame is None
            and (row.number_of_frames or 1) > 1) or row.transfer_syntax in VIDEO_SYNTAXES


def _samples_bytes(metadata: dict[str, Any]) -> int:
    """Bytes per pixel of a decoded frame (samples x bytes per sample)."""
    def value(tag: str, default: int) -> int:
        values = (metadata.get(tag) or {}).get("Value") or [default]
        try:
            return int(values[0])
        except (TypeError, ValueError):
            return default

    return value("00280002", 1) * ((value("00280100", 8) + 7) // 8)


class Archive:
    def __init__(self, store: ResourceStore, blobs: BlobStore, studies: Studies,
                 cache_size: int, limits: Limits | None = None,
                 rendered_dir: Path | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.studies = studies
        self.cache = FrameCache(cache_size)
        self.limits = limits or Limits()
        self.rendered_dir = rendered_dir or Path(tempfile.mkdtemp(prefix="sonobridge-"))

    # ------------------------------------------------------------------------ limits

    def frame_size(self, row: StoredInstance, raw: bytes | None = None,
                   display: bool = False) -> int:
        """The decoded size of one frame of ``row`` in bytes (``display``: as 8-bit display
        values), checked against the limits: the attributes, and the header inside the
        compressed frame ``raw`` when there is one (what the decoder will allocate). 413
        beyond the limits, 422 when the header and the attributes disagree."""
        metadata = orjson.loads(row.metadata)

        def value(tag: str, default: int) -> int:
            values = (metadata.get(tag) or {}).get("Value") or [default]
            try:
                return int(values[0])
            except (TypeError, ValueError):
                return 0

        rows, columns = value("00280010", 0), value("00280011", 0)
        samples, bits = value("00280002", 1), value("00280100", 8)
        what = f"a frame of instance {row.sop_uid}"
        size = self.limits.frame(rows, columns, samples, bits, what)
        if raw is not None and codecs.readable(row.transfer_syntax):
            found = codecs.declared(row.transfer_syntax, raw[:codecs.HEADER_BYTES])
            if found is not None:
                if (found.rows, found.columns) != (rows, columns):
                    raise CoreError(422, "processing", f"{what}: its codestream says "
                                    f"{found.columns} x {found.rows} pixels, its attributes "
                                    f"{columns} x {rows}; it is not decoded")
                self.limits.frame(found.rows, found.columns, found.samples, found.bits, what)
        if display:
            colour = samples > 1 or str((metadata.get("00280004") or {}).get(
                "Value", [""])[0]) == "PALETTE COLOR"
            return rows * columns * (3 if colour else 1)
        return size

    # ------------------------------------------------------------------------ lookups

    def instances(self, study: str, series: str | None = None, sop: str | None = None
                  ) -> list[StoredInstance]:
        """The instances a retrieve addresses, in order; 404 when there are none."""
        with self.store.reader.connect() as conn:
            rows = index.instances(conn, study, series, sop)
        if not rows:
            raise not_found(f"{_what(study, series, sop)} is not stored here")
        return rows

    def instance(self, study: str, series: str, sop: str) -> StoredInstance:
        with self.store.reader.connect() as conn:
            row = index.instance(conn, sop, series, study)
        if row is None:
            raise not_found(f"instance {sop} is not stored in series {series} of "
                            f"study {study}")
        return row

    def retrieve_matches(self, *, patient_ids: Sequence[str] = (),
                         study_uids: Sequence[str] = (), series_uids: Sequence[str] = (),
                         sop_uids: Sequence[str] = ()) -> list[StoredInstance]:
        """The instances a C-MOVE/C-GET identifier names."""
        with self.store.reader.connect() as conn:
            return index.retrieve_matches(conn, patient_ids=patient_ids, study_uids=study_uids,
                                          series_uids=series_uids, sop_uids=sop_uids)

    def has(self, study: str, series: str | None = None, sop: str | None = None) -> bool:
        with self.store.reader.connect() as conn:
            if sop is not None:
                return index.instance(conn, sop, series, study) is not None
            return bool(index.instances(conn, study, series))

    # ------------------------------------------------------------------------ query

    def search(self, level: str, params: Sequence[tuple[str, str]], study: str | None = None,
               series: str | None = None, allowed: set[str] | None = None
               ) -> tuple[list[dict[str, Any]], list[str]]:
        """QIDO matches at ``level`` (DICOM JSON, base placeholder in), and the warnings for
        keys not matched on. ``allowed``: the studies the caller may see (``None``: all)."""
        query = qido.parse_query(level, params)
        with self.store.reader.connect() as conn:
            rows = qido.run(conn, query, study_uid=study, series_uid=series, allowed=allowed)
        build = {"study": qido.study_result, "series": qido.series_result,
                 "instance": qido.instance_result}[level]
        return [build(row, query) for row in rows], query.warnings

    def query_pages(self, query: qido.Query) -> Iterator[Sequence[qido.IndexRow]]:
        """Every match of a query, a page of index rows at a time (by id: stable while rows
        are added), a connection per page so that no read stays open while a slow peer takes
        its responses (C-FIND)."""
        after: int | None = None
        while True:
            with self.store.reader.connect() as conn:
                rows = qido.run(conn, query, after=after)
            if rows:
                yield rows
            if len(rows) < query.limit:
                return
            after = rows[-1].id

    # ------------------------------------------------------------------------ metadata

    def metadata(self, study: str, series: str | None = None, sop: str | None = None
                 ) -> tuple[bytes, str]:
        """The JSON array (base placeholder still in) and a validator for the ETag: the
        same bytes give the same validator in every process."""
        with self.store.reader.connect() as conn:
            rows = index.metadata(conn, study, series, sop)
        if not rows:
            raise not_found(f"{_what(study, series, sop)} is not stored here")
        body = b"[" + b",".join(metadata for metadata, _ in rows) + b"]"
        tag = f"{len(rows)}-{max(received for _, received in rows)}"
        return body, tag

    # ------------------------------------------------------------------------ bytes

    def stream(self, row: StoredInstance) -> Iterator[bytes]:
        """The stored Part 10 file, as received."""
        return self.blobs.stream(row.blob_key)

    def frame_bytes(self, row: StoredInstance, numbers: Sequence[int]) -> list[bytes]:
        """Frames in their stored encoding (one ranged read per fragment)."""
        table = F.frame_table(row.frames)
        F.check_numbers(numbers, len(table))
        return [self._frame(row, table, n) for n in numbers]

    def frames_stream(self, row: StoredInstance) -> Iterator[bytes]:
        """Every frame in its stored encoding, one at a time (bulk data 7FE00010)."""
        table = F.frame_table(row.frames)
        for number in range(1, len(table) + 1):
            yield self._frame(row, table, number)

    def frame_count(self, row: StoredInstance) -> int:
        return len(F.frame_table(row.frames))

    def _frame(self, row: StoredInstance, table: list[list[list[int]]], number: int) -> bytes:
        return self.blobs.read_ranges(row.blob_key, table[number - 1])

    def bulk_value(self, row: StoredInstance, tag: str) -> bytes:
        """A bulk data value other than the pixel data, read from the stored header."""
        element = None
        if re.fullmatch(r"[0-9A-F]{8}", tag):
            with self.blobs.open(row.blob_key) as f:
                ds = dcmread(f, stop_before_pixels=True)
            element = ds.get(int(tag, 16))
        if element is None or element.value is None:
            raise not_found(f"instance {row.sop_uid} has no bulk data at {tag}")
        value = element.value
        return value if isinstance(value, bytes) else bytes(str(value), "utf-8")

    # ------------------------------------------------------------------------ decoding

    def decoded_frame(self, row: StoredInstance, number: int) -> bytes:
        def compute() -> bytes:
            return F.decoded_bytes(self._decoded(row, number, orjson.loads(row.metadata)))

        return self.cache.single_flight(("decoded", row.sop_uid, row.sha256, number), compute)

    def native_frames(self, row: StoredInstance, numbers: Sequence[int]) -> list[bytes]:
        """Frames of a natively stored instance as decoded pixels: the stored bytes when they
        already are (RGB or grey, every allocated bit stored), else decoded (YBR as RGB,
        unused bits masked, signed values sign-extended, colour by pixel)."""
        if F.stored_as_decoded(orjson.loads(row.metadata)):
            return self.frame_bytes(row, numbers)
        F.check_numbers(numbers, self.frame_count(row))
        return [self.decoded_frame(row, n) for n in numbers]

    def jpeg_frame(self, row: StoredInstance, number: int, quality: int = 90) -> bytes:
        def compute() -> bytes:
            metadata = orjson.loads(row.metadata)
            values = rendered.jpeg_values(self._decoded(row, number, metadata),
                                          self._display_attributes(row, metadata))
            return rendered.encode_image(values, "image/jpeg", quality=quality)

        return self.cache.single_flight(("jpeg", row.sop_uid, row.sha256, number, quality),
                                        compute)

    def _decoded(self, row: StoredInstance, number: int, metadata: dict[str, Any]
                 ) -> np.ndarray:
        """Frame ``number`` decoded (within the limits), as pydicom's ``pixel_array``."""
        table = F.frame_table(row.frames)
        F.check_numbers([number], len(table))
        raw = self._frame(row, table, number)
        self.frame_size(row, raw)
        if row.transfer_syntax == BIG_ENDIAN and table[0] and table[0][0][0] >= 8:
            # 8-bit pixels in an OW value are byte-swapped in big endian: the decoder needs
            # the VR the file has, which the metadata (OB for 8 bits) does not say. Explicit
            # VR: it is the two bytes 8 before the value.
            vr = self.blobs.read_ranges(row.blob_key, [[table[0][0][0] - 8, 2]])
            if vr in (b"OB", b"OW"):
                metadata = {**metadata, "7FE00010": {"vr": vr.decode()}}
        return F.decode(row.transfer_syntax, raw, metadata)

    def _display(self, row: StoredInstance, number: int, window: rendered.Window | None,
                 attrs: Dataset | None = None) -> np.ndarray:
        metadata = orjson.loads(row.metadata)
        array = self._decoded(row, number, metadata)
        return rendered.to_display(array, attrs or self._display_attributes(row, metadata),
                                   window)

    def _display_attributes(self, row: StoredInstance, metadata: dict[str, Any]) -> Dataset:
        """What rendering follows: the metadata's numbers, the stored header's LUTs."""
        header = None
        if rendered.needs_header(metadata):
            with self.blobs.open(row.blob_key) as f:
                header = dcmread(f, stop_before_pixels=True)
        return rendered.display_attributes(metadata, header)

    # ------------------------------------------------------------------------ rendered

    def render(self, row: StoredInstance, media: str, frame: int | None, quality: int,
               viewport: tuple[int, int] | None, window: rendered.Window | None,
               budget: Budget | None = None) -> bytes:
        key = ("rendered", row.sop_uid, row.sha256, frame, media, quality, viewport, window)
        budget = budget or self.limits.budget()

        def compute() -> bytes:
            if is_video(row, media, frame):
                return self.render_video(row, media, viewport, window, budget).read_bytes()
            display = self._display(row, frame or 1, window)
            return rendered.encode_image(display, media, quality=quality, viewport=viewport)

        return self.cache.single_flight(key, compute)

    def render_video(self, row: StoredInstance, media: str,
                     viewport: tuple[int, int] | None, window: rendered.Window | None,
                     budget: Budget | None = None) -> Path:
        """A cine or a video instance as MP4 (or GIF), in a file: decoded and encoded one
        frame at a time, so memory does not grow with the length of the cine; a video
        transfer syntax is copied into MP4 without decoding. The file is kept (bounded,
        ``RENDERED_BYTES``) for the Range requests a browser's player sends next."""
        key = ("video", row.sop_uid, row.sha256, media, viewport, window)
        budget = budget or self.limits.budget()
        for _ in range(2):
            path = Path(self.cache.single_flight(key, lambda: str(self._video_file(
                key, row, media, viewport, window, budget)).encode()).decode())
            if path.exists():
                return path
            self.cache.discard(key)  # evicted from the disk since: made again
        raise CoreError(503, "transient", "the rendering was evicted while in use; try again")

    def _video_file(self, key: tuple[Any, ...], row: StoredInstance, media: str,
                    viewport: tuple[int, int] | None, window: rendered.Window | None,
                    budget: Budget) -> Path:
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:40]
        target = self.rendered_dir / f"{name}{'.gif' if media == 'image/gif' else '.mp4'}"
        if target.exists():
            return target
        self.rendered_dir.mkdir(parents=True, exist_ok=True)
        metadata = orjson.loads(row.metadata)
        fps = rendered.frame_rate(metadata)
        count = row.number_of_frames or 1
        pixels = self.frame_size(row) // max(1, _samples_bytes(metadata))
        what = f"the rendering of instance {row.sop_uid}"
        work = Path(tempfile.mkdtemp(dir=self.rendered_dir, prefix=".work-"))
        try:
            partial = work / target.name
            if row.transfer_syntax in VIDEO_SYNTAXES:
                if media != "video/mp4":
                    raise not_acceptable("this is a video: it is rendered as video/mp4")
                self.limits.streamed(pixels, count, what)
                source = work / "stream"
                with source.open("wb") as out:  # the elementary stream, a fragment at a time
                    for chunk in self.frames_stream(row):
                        out.write(chunk)
                rendered.video_to_mp4(str(source), str(partial), fps, budget.check)
            else:
                if media == "image/gif":  # Pillow keeps the palette images: one byte a pixel
                    self.limits.held(pixels, count, what)
                else:
                    self.limits.streamed(pixels, count, what)
                attrs = self._display_attributes(row, metadata)

                def displays() -> Iterator[np.ndarray]:
                    for n in range(1, count + 1):
                        budget.check()
                        yield self._display(row, n, window, attrs)

                write = rendered.write_gif if media == "image/gif" else rendered.write_mp4
                write(str(partial), displays(), fps, viewport)
            budget.check()
            os.replace(partial, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._evict_rendered()
        return target

    def _evict_rendered(self) -> None:
        files = sorted((p for p in self.rendered_dir.iterdir() if p.is_file()),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for path in files[:-1]:  # never the one just made
            if total <= RENDERED_BYTES:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

    def thumbnail(self, row: StoredInstance, media: str, viewport: tuple[int, int] | None,
                  frame: int | None = None) -> bytes:
        """A small image of ``frame`` (the frame-level thumbnail), or of the middle frame of
        a cine (the instance's; a video's first)."""
        count = row.number_of_frames or 1
        size = viewport or (128, 128)
        if row.transfer_syntax in VIDEO_SYNTAXES:
            return self._video_thumbnail(row, media, size, frame or 1)
        if frame is None:
            frame = (count + 1) // 2 if count > 1 else 1
        return self.render(row, media, frame=frame, quality=80, viewport=size, window=None)

    def _video_thumbnail(self, row: StoredInstance, media: str, size: tuple[int, int],
                         frame: int = 1) -> bytes:
        import av

        self.frame_size(row)

        def compute() -> bytes:
            stream = b"".join(self.frames_stream(row))
            with av.open(io.BytesIO(stream), mode="r") as container:
                # decoded one by one up to the frame asked for (its number was checked
                # against the instance's frame count), none of them kept
                for number, video_frame in enumerate(container.decode(video=0), start=1):
                    if number == frame:
                        display = video_frame.to_ndarray(format="rgb24")
                        return rendered.encode_image(display, media, quality=80,
                                                     viewport=size)
            raise not_found(f"the video has no frame {frame} to show")

        return self.cache.single_flight(("thumb", row.sop_uid, row.sha256, media, size, frame),
                                        compute)

    # ------------------------------------------------------------------------ transcoding

    def can_transcode(self, row: StoredInstance, syntax: str) -> bool:
        bits = int(((orjson.loads(row.metadata).get("00280100") or {}).get("Value") or [8])[0])
        return transcode.can_convert(row.transfer_syntax, syntax, bits)

    def transcoded(self, row: StoredInstance, syntax: str) -> Iterator[bytes]:
        """The instance in another transfer syntax, streamed a frame at a time. 406 before
        the first byte when it cannot be converted."""
        if not self.can_transcode(row, syntax):
            bits = int(((orjson.loads(row.metadata).get("00280100") or {})
                        .get("Value") or [8])[0])
            if syntax == transcode.JPEG_BASELINE and bits != 8:
                raise not_acceptable("only 8-bit images can be sent as JPEG baseline")
            raise not_acceptable(f"instance {row.sop_uid} (stored in {row.transfer_syntax}) "
                                 f"cannot be sent in transfer syntax {syntax}")
        metadata = orjson.loads(row.metadata)
        if row.transfer_syntax not in transcode.UNCOMPRESSED:
            self.frame_size(row, self.frame_bytes(row, [1])[0] if row.frames else None)

        attrs = self._display_attributes(row, metadata)

        def display(array: np.ndarray) -> np.ndarray:
            return array if array.dtype == np.uint8 else rendered.to_display(array, attrs)

        def chunks() -> Iterator[bytes]:
            with self.blobs.open(row.blob_key) as f:
                try:
                    yield from transcode.transcoded(f, syntax, display)
                except transcode.CannotConvert as exc:
                    raise CoreError(500, "exception", str(exc)) from None

        return chunks()

    # ------------------------------------------------------------------------ delete

    def delete(self, caller: Caller, study: str, series: str | None = None,
               sop: str | None = None) -> int:
        """Delete a study, series or instance: index rows and ImagingStudy in one
        transaction, then the files. Returns how many instances went."""
        with self.store.write() as writer:
            events = self.studies.resources.events
            if events.wants(InstanceDeleted):  # e.g. an SR's Observations go with it
                events.emit(InstanceDeleted(writer, caller, study, series, sop))
            keys = index.remove(writer.conn, writer.now, study_uid=study, series_uid=series,
                                sop_uid=sop)
            if keys:
                self.studies.sync(writer, caller, study)
        if not keys:
            raise not_found(f"{_what(study, series, sop)} is not stored here")
        for key in keys:
            self.blobs.delete(key)
        return len(keys)


def with_base(body: bytes, base: str) -> bytes:
    """Fill the DICOMweb root into precomputed BulkDataURIs and RetrieveURLs."""
    return body.replace(BASE_BYTES, base.encode())


__all__ = ["Archive", "bad_request", "with_base"]
