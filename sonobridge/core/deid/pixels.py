"""Clean Pixel Data for ultrasound (PS3.15 E.3.1, code 113101): keep only the data regions,
blank everything else on every frame.

Scanners burn the patient's name, ID and the date into a header band above the image, on
every frame of a cine, and often leave BurnedInAnnotation unset or wrong. What is kept is the
union of the ``SequenceOfUltrasoundRegions`` rectangles (the image areas the scanner itself
declares: B-mode, Doppler strips), or, for a model that declares none, the ``keep``
rectangles configured for it; the model's ``blank`` rectangles are blanked in any case (text
a scanner draws inside its own region). An image with neither is not cleaned but refused
(fail-closed): there is no safe guess of where text may be.

Frames are decoded, masked and re-encoded one at a time in the family they came in: native
stays native; JPEG Baseline stays JPEG Baseline (lossy: Lossy Image Compression stays 01 and
the new compression is appended to its method and ratio, PS3.3 C.7.6.1.1.5); RLE stays RLE;
JPEG-LS and JPEG 2000 lossless stay lossless (JPEG lossless processes 14 and 14 SV1, which
no Python encoder writes, become JPEG-LS lossless). ``deid``'s pixel cleaner would do the
masking, but it decodes the whole object into memory and writes native pixels only; the
re-encoding per family is why this is written here (pydicom decoders and encoders, Pillow
for JPEG Baseline, which pydicom does not encode).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.encoders.base import (
    JPEG2000LosslessEncoder,
    JPEGLSLosslessEncoder,
    RLELosslessEncoder,
)
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import UID

from sonobridge.core.errors import CoreError

EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
JPEG_BASELINE, JPEG_EXTENDED = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
JPEG_LS_LOSSLESS, JPEG_LS_NEAR = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
JPEG_QUALITY = 95  # re-encoding a lossy image once more: keep the loss small


def target_syntax(stored: str) -> str:
    """The transfer syntax a cleaned object is written in, or 422 if none is safe."""
    if stored in (EXPLICIT_LE, IMPLICIT_LE):
        return EXPLICIT_LE
    if stored in (JPEG_BASELINE, JPEG_EXTENDED):
        return JPEG_BASELINE
    if stored in JPEG_LOSSLESS or stored in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR):
        return JPEG_LS_LOSSLESS
    if stored in (J2K_LOSSLESS, J2K):
        return J2K_LOSSLESS
    if stored == RLE:
        return RLE
    raise CoreError(422, "processing", f"pixel data in transfer syntax {stored} "
                    f"({UID(stored).name}) cannot be decoded and re-encoded here, so it "
                    "cannot be cleaned", expression=["(0002,0010)"])


@dataclass(frozen=True)
class Rect:
    """Inclusive pixel rectangle, as RegionLocationMinX0/MinY0/MaxX1/MaxY1."""

    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class ModelMask:
    keep: tuple[Rect, ...] = ()
    blank: tuple[Rect, ...] = ()


def load_masks(path: str | Path | None) -> dict[str, ModelMask]:
    """``{"Manufacturer|Model": {"keep": [[x0,y0,x1,y1],...], "blank": [...]}}``; a key
    without ``|`` matches every model of that manufacturer."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text("utf-8"))
        return {str(name): ModelMask(tuple(Rect(*map(int, r)) for r in spec.get("keep", [])),
                                     tuple(Rect(*map(int, r)) for r in spec.get("blank", [])))
                for name, spec in data.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"de-identification masks file {path}: {exc}") from None


def mask_for(masks: dict[str, ModelMask], ds: Dataset) -> ModelMask | None:
    manufacturer = str(ds.get("Manufacturer", "") or "").strip()
    model = str(ds.get("ManufacturerModelName", "") or "").strip()
    return masks.get(f"{manufacturer}|{model}") or masks.get(manufacturer)


def keep_mask(ds: Dataset, masks: dict[str, ModelMask]) -> np.ndarray:
    """Boolean (rows, columns): True where pixels are kept. 422 when nothing says where the
    image is (no regions, no configured mask)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    keep = np.zeros((rows, columns), dtype=bool)
    model = mask_for(masks, ds)
    rects: list[Rect] = []
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            rects.append(Rect(int(item.RegionLocationMinX0), int(item.RegionLocationMinY0),
                              int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)))
        except (AttributeError, TypeError, ValueError):
            raise CoreError(422, "processing", "an ultrasound region has no valid location, "
                            "so the image cannot be cleaned",
                            expression=["(0018,6011)"]) from None
    if not rects and model is not None:
        rects = list(model.keep)
    if not rects:
        raise CoreError(422, "processing", "the image has no ultrasound regions "
                        "(SequenceOfUltrasoundRegions) and no pixel mask is configured for "
                        f"{ds.get('Manufacturer', '')!s} {ds.get('ManufacturerModelName', '')!s}"
                        " (SONOBRIDGE_DEID_MASKS_FILE): burned-in text cannot be located",
                        expression=["(0018,6011)"])
    for r in rects:
        keep[max(r.y0, 0):max(r.y1 + 1, 0), max(r.x0, 0):max(r.x1 + 1, 0)] = True
    for r in model.blank if model is not None else ():
        keep[max(r.y0, 0):max(r.y1 + 1, 0), max(r.x0, 0):max(r.x1 + 1, 0)] = False
    return keep


@dataclass
class NativePixels:
    """Cleaned native pixels, to be written after the other elements one frame at a time
    (a native cine is ten times its JPEG size: it is never held whole in memory)."""

    frames: Iterator[bytes]
    length: int  # the Pixel Data value length, padding included
    vr: str

    def write(self, out: BinaryIO) -> None:
        """The Pixel Data element in Explicit VR Little Endian, then its value."""
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, self.vr.encode("ascii"), 0,
                              self.length))
        written = 0
        for chunk in self.frames:
            out.write(chunk)
            written += len(chunk)
        if written % 2:
            out.write(b"\0")
            written += 1
        if written != self.length:
            raise CoreError(422, "processing", f"the pixel data holds {written} bytes, the "
                            f"attributes describe {self.length}", expression=["(7FE0,0010)"])


def clean_pixels(ds: Dataset, source: Path, keep: np.ndarray,
                 check: Callable[[], None] | None = None) -> tuple[str, NativePixels | None]:
    """Blank outside ``keep`` on every frame of ``ds``'s pixel data (read frame by frame from
    ``source``, the original file), re-encode, and set the attributes that describe the new
    pixels. Returns the transfer syntax the object must now be written in, and for native
    pixels the frames still to be written (``ds`` then has no Pixel Data element). ``check``
    is called before each frame (the request's time budget)."""
    stored = str(ds.file_meta.TransferSyntaxUID)
    target = target_syntax(stored)
    if int(ds.get("BitsAllocated", 8)) not in (8, 16):
        raise CoreError(422, "processing", "only 8 and 16 bit pixel data can be cleaned",
                        expression=["(0028,0100)"])
    frames = _frames(source, ds, check)
    samples = int(ds.get("SamplesPerPixel", 1))
    native = None
    if target == EXPLICIT_LE:
        native = _native(ds, frames, keep)
    elif target == JPEG_BASELINE:
        _jpeg(ds, frames, keep, samples, check)
    else:
        _lossless(ds, frames, keep, target)
    ds.BurnedInAnnotation = "NO"
    if "RecognizableVisualFeatures" not in ds:
        ds.RecognizableVisualFeatures = "NO"  # an ultrasound region shows no face
    return target, native


def _frames(source: Path, ds: Dataset, check: Callable[[], None] | None = None
            ) -> Iterator[np.ndarray]:
    """Decoded frames, one at a time, colour as RGB; an undecodable frame is a 422."""
    try:
        for frame in iter_pixels(source, as_rgb=True):
            if check is not None:
                check()
            yield frame
    except CoreError:
        raise
    except Exception as exc:  # decoders raise many kinds on a damaged frame
        raise CoreError(422, "processing", f"a frame cannot be decoded ({exc}), so the "
                        "object cannot be cleaned", expression=["(7FE0,0010)"]) from None


def _blank(frame: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = frame if frame.flags.writeable else np.array(frame, copy=True)
    out[~keep] = 0
    return out


def _native(ds: Dataset, frames: Iterator[np.ndarray], keep: np.ndarray) -> NativePixels:
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype: np.dtype[Any] = np.dtype(("<i" if signed else "<u") + str(int(ds.BitsAllocated) // 8))
    samples = int(ds.get("SamplesPerPixel", 1))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    length = count * int(ds.Rows) * int(ds.Columns) * samples * dtype.itemsize
    if samples == 3:
        ds.PhotometricInterpretation = "RGB"  # decoded as RGB
        ds.PlanarConfiguration = 0
    del ds["PixelData"]

    def chunks() -> Iterator[bytes]:
        for frame in frames:
            yield _blank(frame, keep).astype(dtype, copy=False).tobytes()

    return NativePixels(chunks(), length + length % 2, "OW" if dtype.itemsize == 2 else "OB")


def _jpeg(ds: Dataset, frames: Iterator[np.ndarray], keep: np.ndarray, samples: int,
          check: Callable[[], None] | None = None) -> None:
    if int(ds.BitsAllocated) != 8:
        raise CoreError(422, "processing", "JPEG Baseline holds 8-bit images only",
                        expression=["(0028,0100)"])
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if str(ds.file_meta.TransferSyntaxUID) == JPEG_BASELINE and photometric in _PILLOW_JPEG:
        encoded = list(_jpeg_direct(ds, keep, _PILLOW_JPEG[photometric], check))
        raw = int(ds.Rows) * int(ds.Columns) * samples * len(encoded)
    else:
        encoded, raw = [], 0
        for frame in frames:
            clean = _blank(frame, keep).astype(np.uint8, copy=False)
            raw += clean.nbytes
            encoded.append(_encode_jpeg(Image.fromarray(clean, "RGB" if samples == 3 else "L")))
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if samples == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    ratio = round(raw / max(sum(len(f) for f in encoded), 1), 2)
    _lossy(ds, "ISO_10918_1", ratio)


# JPEG Baseline frames Pillow decodes and re-encodes in their own colour space (YCbCr stays
# YCbCr: no colour conversion round trip, a third of the time of pydicom's decode to RGB).
_PILLOW_JPEG = {"YBR_FULL_422": "YCbCr", "YBR_FULL": "YCbCr", "MONOCHROME2": "L"}
_BLACK = {"YCbCr": (0, 128, 128), "L": 0}


def _encode_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=1, optimize=False,
               progressive=False)
    return buf.getvalue()


def _jpeg_direct(ds: Dataset, keep: np.ndarray, mode: str,
                 check: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Each JPEG frame decoded by Pillow in its own colour space, blanked, re-encoded; its
    size is checked against Rows and Columns before the mask is applied."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    try:
        for fragment in generate_frames(ds.PixelData, number_of_frames=count):
            if check is not None:
                check()
            with Image.open(io.BytesIO(fragment)) as image:
                if image.size != (columns, rows):
                    raise CoreError(422, "processing", f"a JPEG frame is {image.size[0]} x "
                                    f"{image.size[1]}, Rows and Columns say {columns} x {rows}",
                                    expression=["(7FE0,0010)"])
                image.draft(mode, image.size)
                array = np.array(image.convert(mode) if image.mode != mode else image)
            array[~keep] = _BLACK[mode]
            yield _encode_jpeg(Image.fromarray(array, mode))
    except CoreError:
        raise
    except Exception as exc:  # Pillow raises several kinds on a damaged frame
        raise CoreError(422, "processing", f"a frame cannot be decoded ({exc}), so the "
                        "object cannot be cleaned", expression=["(7FE0,0010)"]) from None


def _lossy(ds: Dataset, method: str, ratio: float) -> None:
    """Lossy once, lossy for ever: 01, with this compression appended to the history."""
    was_lossy = str(ds.get("LossyImageCompression", "00")) == "01"
    methods = _as_list(ds.get("LossyImageCompressionMethod")) if was_lossy else []
    ratios = _as_list(ds.get("LossyImageCompressionRatio")) if was_lossy else []
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = [*methods, method]
    ds.LossyImageCompressionRatio = [*ratios, ratio]


def _lossless(ds: Dataset, frames: Iterator[np.ndarray], keep: np.ndarray, target: str
              ) -> None:
    encoder: Any = {RLE: RLELosslessEncoder, JPEG_LS_LOSSLESS: JPEGLSLosslessEncoder,
                    J2K_LOSSLESS: JPEG2000LosslessEncoder}[target]
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = "RGB" if samples == 3 else str(ds.PhotometricInterpretation)
    encoded: list[bytes] = []
    try:
        for frame in frames:
            clean = np.ascontiguousarray(_blank(frame, keep))
            encoded.append(encoder.encode(
                clean, rows=int(ds.Rows), columns=int(ds.Columns), samples_per_pixel=samples,
                bits_allocated=int(ds.BitsAllocated), bits_stored=int(ds.BitsStored),
                pixel_representation=int(ds.get("PixelRepresentation", 0)),
                photometric_interpretation=photometric, number_of_frames=1,
                planar_configuration=0))
    except CoreError:
        raise
    except Exception as exc:
        raise CoreError(422, "processing", f"a cleaned frame cannot be re-encoded as "
                        f"{UID(target).name} ({exc})", expression=["(7FE0,0010)"]) from None
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.PhotometricInterpretation = photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
        if target == J2K_LOSSLESS:  # the encoder applies the reversible colour transform
            ds.PhotometricInterpretation = "YBR_RCT"


def clean_overlays(ds: Dataset, groups: list[int], keep: np.ndarray) -> None:
    """Clean Graphics kept these overlay planes: their bits outside the kept image area are
    cleared (text drawn into an overlay is blanked the same way as in the pixels)."""
    rows, columns = keep.shape
    for group in groups:
        data = ds.get((group << 16) | 0x3000)
        if data is None:
            continue
        try:
            o_rows = int(ds[(group << 16) | 0x0010].value)
            o_cols = int(ds[(group << 16) | 0x0011].value)
            origin = ds.get((group << 16) | 0x0050)
            oy, ox = (int(origin.value[0]), int(origin.value[1])) if origin is not None \
                else (1, 1)
            n = int(ds[(group << 16) | 0x0015].value) if (group << 16) | 0x0015 in ds else 1
            bits = np.unpackbits(np.frombuffer(bytes(data.value), np.uint8),
                                 bitorder="little")
            plane = bits[:n * o_rows * o_cols].reshape(n, o_rows, o_cols)
        except (KeyError, TypeError, ValueError, IndexError):
            remove_groups(ds, [group])  # an overlay that cannot be read cannot be cleaned
            continue
        yy, xx = np.mgrid[0:o_rows, 0:o_cols]
        iy, ix = yy + oy - 1, xx + ox - 1
        inside = (iy >= 0) & (iy < rows) & (ix >= 0) & (ix < columns)
        allowed = np.zeros((o_rows, o_cols), dtype=bool)
        allowed[inside] = keep[iy[inside], ix[inside]]
        plane = plane & allowed[None, :, :]
        packed = np.packbits(plane.reshape(-1), bitorder="little").tobytes()
        if len(packed) % 2:
            packed += b"\0"
        data.value = packed


def remove_groups(ds: Dataset, groups: list[int]) -> None:
    """Every element of these (overlay) groups removed."""
    for tag in [t for t in list(ds.keys()) if (int(t) >> 16) in groups]:
        del ds[tag]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if hasattr(value, "__iter__"):
        return list(value)
    return [value]
