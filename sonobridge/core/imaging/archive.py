"""DICOMweb operations over the DICOM store: the blocking work the HTTP edge calls in threads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from sqlalchemy import select

from sonobridge.core.imaging import frames as F
from sonobridge.core.imaging import query as qido
from sonobridge.core.imaging import render as rendered
from sonobridge.core.imaging.cache import FrameCache
from sonobridge.core.imaging.ingest import DicomIngest
from sonobridge.core.imaging.metadata import BASE_BYTES, VIDEO_SYNTAXES
from sonobridge.core.policy import Policy
from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.store.dicom import index
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import dicom_series as S
from sonobridge.store.tables import dicom_studies as ST


@dataclass
class Located:
    """The instances a retrieve addresses, in order."""

    rows: list[Any]


class DicomWeb:
    def __init__(self, core: Any) -> None:
        self.core = core
        self.ingest = DicomIngest(core)
        self.cache = FrameCache(core.settings.dicom_cache_size)

    # ------------------------------------------------------------------------ lookups

    def instances(self, study: str, series: str | None = None, sop: str | None = None,
                  columns: tuple[Any, ...] = ()) -> list[Any]:
        wanted = columns or (I.c.sop_uid, I.c.series_uid, I.c.study_uid, I.c.blob_key,
                             I.c.transfer_syntax, I.c.size, I.c.sop_class_uid)
        stmt = select(*wanted).where(I.c.study_uid == study)
        if series is not None:
            stmt = stmt.where(I.c.series_uid == series)
        if sop is not None:
            stmt = stmt.where(I.c.sop_uid == sop)
        stmt = stmt.order_by(I.c.series_uid, I.c.instance_number, I.c.id)
        with self.core.store.reader.connect() as conn:
            rows = conn.execute(stmt).all()
        if not rows:
            what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise DicomwebError(404, f"{what} is not stored here")
        return rows

    def instance(self, study: str, series: str, sop: str) -> Any:
        with self.core.store.reader.connect() as conn:
            row = conn.execute(select(I).where(I.c.sop_uid == sop, I.c.series_uid == series,
                                               I.c.study_uid == study)).first()
        if row is None:
            raise DicomwebError(404, f"instance {sop} is not stored in series {series} of "
                                f"study {study}")
        return row

    def path(self, row: Any) -> str:
        return str(self.core.blobs.path(row.blob_key))

    # ------------------------------------------------------------------------ QIDO

    def search(self, level: str, params: list[tuple[str, str]], study: str | None = None,
               series: str | None = None, allowed: set[str] | None = None
               ) -> tuple[list[dict[str, Any]], list[str]]:
        query = qido.parse_query(level, params)
        with self.core.store.reader.connect() as conn:
            rows = qido.run(conn, query, study_uid=study, series_uid=series, allowed=allowed)
        build = {"study": qido.study_result, "series": qido.series_result,
                 "instance": qido.instance_result}[level]
        return [build(row, query) for row in rows], query.warnings

    def access(self, policy: Policy, fhir_base: str, permission: str, study: str | None
               ) -> set[str] | str | None:
        """What the policy allows here: ``None`` (everything), the set of study UIDs it may
        search, or a message saying why not (403)."""
        from sonobridge.core import access
        from sonobridge.core.errors import FhirError

        engine = self.core.search
        try:
            if permission == "c":
                scopes = access.require(policy, "ImagingStudy", "c")
                if any(s.context == "patient" or s.query for s in scopes):
                    return ("storing needs user/ or system/ create rights on ImagingStudy "
                            "without a patient or query restriction")
                return None
            with self.core.store.reader.connect() as conn:
                if study is not None:
                    access.check_one(engine, conn, policy, fhir_base, permission,
                                     "ImagingStudy", study)
                    return None
                return access.allowed_ids(engine, conn, policy, fhir_base, permission,
                                          "ImagingStudy")
        except FhirError as exc:
            return str(exc).replace("ImagingStudy/", "study ")

    # ------------------------------------------------------------------------ metadata

    def metadata(self, study: str, series: str | None = None, sop: str | None = None
                 ) -> tuple[bytes, str]:
        """The JSON array (base placeholder still in) and a validator for ETag."""
        rows = self.instances(study, series, sop, columns=(I.c.metadata, I.c.received,
                                                          I.c.sha256))
        body = b"[" + b",".join(row.metadata for row in rows) + b"]"
        tag = f'"{len(rows)}-{max(r.received for r in rows)}"'
        return body, tag

    # ------------------------------------------------------------------------ frames

    def frame_bytes(self, row: Any, numbers: list[int]) -> list[bytes]:
        table = F.frame_table(row)
        F.check_numbers(numbers, len(table))
        path = self.path(row)
        return [F.read_frame(path, table[n - 1]) for n in numbers]

    def decoded_frame(self, row: Any, number: int) -> bytes:
        def compute() -> bytes:
            raw = self.frame_bytes(row, [number])[0]
            metadata = orjson.loads(row.metadata)
            return F.decoded_bytes(F.decode(row.transfer_syntax, raw, metadata))

        return self.cache.single_flight(("decoded", row.sop_uid, row.sha256, number), compute)

    def jpeg_frame(self, row: Any, number: int, quality: int = 90) -> bytes:
        def compute() -> bytes:
            display = self._display(row, number, None)
            return rendered.encode_image(display, "image/jpeg", quality=quality)

        return self.cache.single_flight(("jpeg", row.sop_uid, row.sha256, number, quality),
                                        compute)

    def _display(self, row: Any, number: int, window: tuple[float, float] | None
                 ) -> np.ndarray:
        raw = self.frame_bytes(row, [number])[0]
        metadata = orjson.loads(row.metadata)
        array = F.decode(row.transfer_syntax, raw, metadata)
        palette = None
        if str((metadata.get("00280004") or {}).get("Value", [""])[0]) == "PALETTE COLOR":
            header = self._header(row)
            from pydicom.pixels import apply_color_lut

            descriptor = header.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
            entry_bits = int(descriptor[2]) or 16

            def palette(values: np.ndarray) -> np.ndarray:
                rgb = apply_color_lut(values, header)
                # 16-bit entries keep their top 8 bits; some files declare 16 bits but hold
                # 8-bit values (seen in real ultrasound files): those are used as they are.
                if entry_bits > 8 and int(rgb.max()) > 255:
                    return (rgb >> (entry_bits - 8)).astype(np.uint8)
                return rgb.astype(np.uint8)

        return rendered.to_display(array, metadata, window, palette)

    def _header(self, row: Any) -> Any:
        with open(self.path(row), "rb") as f:
            return dcmread(f, stop_before_pixels=True)

    # ------------------------------------------------------------------------ rendered

    def render(self, row: Any, media: str, frame: int | None, quality: int,
               viewport: tuple[int, int] | None, window: tuple[float, float] | None) -> bytes:
        key = ("rendered", row.sop_uid, row.sha256, frame, media, quality, viewport, window)

        def compute() -> bytes:
            metadata = orjson.loads(row.metadata)
            count = row.number_of_frames or 1
            if (media in ("video/mp4", "image/gif") and frame is None and count > 1) or \
                    row.transfer_syntax in VIDEO_SYNTAXES:
                return self._cine(row, media, metadata, viewport, window)
            display = self._display(row, frame or 1, window)
            return rendered.encode_image(display, media, quality=quality, viewport=viewport)

        return self.cache.single_flight(key, compute)

    def _cine(self, row: Any, media: str, metadata: dict[str, Any],
              viewport: tuple[int, int] | None, window: tuple[float, float] | None) -> bytes:
        fps = rendered.frame_rate(metadata)
        if row.transfer_syntax in VIDEO_SYNTAXES:
            stream = b"".join(self.frame_bytes(row, list(range(1, len(F.frame_table(row)) + 1))))
            if media == "video/mp4":
                return rendered.video_to_mp4(stream, fps)
            raise DicomwebError(406, "this is a video: it is rendered as video/mp4")
        count = row.number_of_frames or 1
        displays = [self._display(row, n, window) for n in range(1, count + 1)]
        if media == "image/gif":
            return rendered.encode_gif(displays, fps, viewport)
        return rendered.encode_mp4(displays, fps, viewport)

    def thumbnail(self, row: Any, media: str, viewport: tuple[int, int] | None) -> bytes:
        count = row.number_of_frames or 1
        size = viewport or (128, 128)
        if row.transfer_syntax in VIDEO_SYNTAXES:
            return self._video_thumbnail(row, media, size)
        return self.render(row, media, frame=(count + 1) // 2 if count > 1 else 1, quality=80,
                           viewport=size, window=None)

    def _video_thumbnail(self, row: Any, media: str, size: tuple[int, int]) -> bytes:
        import av

        def compute() -> bytes:
            stream = b"".join(self.frame_bytes(row, list(range(1, len(F.frame_table(row)) + 1))))
            with av.open(io.BytesIO(stream)) as container:
                for video_frame in container.decode(video=0):
                    display = video_frame.to_ndarray(format="rgb24")
                    return rendered.encode_image(display, media, quality=80, viewport=size)
            raise DicomwebError(404, "the video has no frame to show")

        return self.cache.single_flight(("thumb", row.sop_uid, row.sha256, media, size), compute)

    # ------------------------------------------------------------------------ transcoding

    def transcoded(self, row: Any, syntax: str) -> bytes:
        """The instance as Explicit VR Little Endian (decoded) or JPEG baseline."""
        with open(self.path(row), "rb") as f:
            ds = dcmread(f)
        if syntax == ExplicitVRLittleEndian:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                # YBR_FULL_422 comes out as RGB, and says so; the instance keeps its UID (a
                # lossless decoding of the one asked for, not a new instance)
                ds.decompress(as_rgb=True, generate_instance_uid=False)
            else:
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        elif syntax == JPEGBaseline8Bit:
            ds = self._to_jpeg(row, ds)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def _to_jpeg(self, row: Any, ds: Any) -> Any:
        if int(ds.get("BitsAllocated", 8)) != 8:
            raise DicomwebError(406, "only 8-bit images can be sent as JPEG baseline")
        count = row.number_of_frames or 1
        metadata = orjson.loads(row.metadata)
        frames = []
        for number in range(1, count + 1):
            array = F.decode(row.transfer_syntax, self.frame_bytes(row, [number])[0], metadata)
            frames.append(rendered.encode_image(array if array.dtype == np.uint8 else
                                                rendered.to_display(array, metadata),
                                                "image/jpeg", quality=90))
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.PhotometricInterpretation = "YBR_FULL_422" if int(ds.SamplesPerPixel) == 3 \
            else "MONOCHROME2"
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        return ds

    # ------------------------------------------------------------------------ delete

    def delete(self, study: str, series: str | None = None, sop: str | None = None) -> int:
        with self.core.store.write() as writer:
            keys = index.remove(writer, self.core, study_uid=study, series_uid=series,
                                sop_uid=sop)
        if not keys:
            what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise DicomwebError(404, f"{what} is not stored here")
        for key in keys:
            self.core.blobs.delete(key)
        return len(keys)

    def study_exists(self, study: str) -> bool:
        with self.core.store.reader.connect() as conn:
            return conn.execute(select(ST.c.id).where(ST.c.study_uid == study)).first() \
                is not None

    def series_row(self, series: str) -> Any:
        with self.core.store.reader.connect() as conn:
            return conn.execute(select(S).where(S.c.series_uid == series)).first()


def with_base(body: bytes, base: str) -> bytes:
    """Fill the DICOMweb root into precomputed BulkDataURIs and RetrieveURLs."""
    return body.replace(BASE_BYTES, base.encode())


def iter_file(path: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    from sonobridge.dicomweb.multipart import file_chunks

    return file_chunks(lambda: open(path, "rb"), start, length)
