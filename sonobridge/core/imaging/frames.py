"""Frames: read in their stored encoding through the frame table, decode one, describe one.

Reading frame N is one or a few ranged reads at offsets found at ingest: no parse of the
file, the same cost for the last frame as for the first. Decoding touches that frame only
(pydicom's decoders with pylibjpeg, Pillow for JPEG), and YBR colour comes out as RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

from sonobridge.core.errors import not_acceptable, not_found

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
          "1.2.840.10008.1.2.1.99"}
_JPEG = "image/jpeg"
MEDIA_BY_SYNTAX = {
    "1.2.840.10008.1.2.4.50": _JPEG, "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG, "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg2", "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4", "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4", "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4", "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def stored_media_type(transfer_syntax: str) -> str:
    return "application/octet-stream" if transfer_syntax in NATIVE else \
        MEDIA_BY_SYNTAX.get(transfer_syntax, "application/octet-stream")


def frame_table(frames: bytes | None) -> list[list[list[int]]]:
    """An instance's frame table: per frame, the (offset, length) of each of its ranges."""
    if not frames:
        raise not_found("this instance has no pixel data frames")
    table: list[list[list[int]]] = orjson.loads(frames)
    return table


def check_numbers(numbers: Sequence[int], count: int) -> None:
    for number in numbers:
        if number < 1 or number > count:
            raise not_found(f"frame {number} does not exist: this instance has frames "
                                f"1 to {count}")


def pixel_options(metadata: dict[str, Any]) -> dict[str, Any]:
    def value(tag: str, default: Any = None) -> Any:
        values = (metadata.get(tag) or {}).get("Value") or []
        return values[0] if values else default

    return {
        "rows": int(value("00280010", 0)), "columns": int(value("00280011", 0)),
        "samples_per_pixel": int(value("00280002", 1)),
        "bits_allocated": int(value("00280100", 8)), "bits_stored": int(value("00280101", 8)),
        "pixel_representation": int(value("00280103", 0)),
        "photometric_interpretation": str(value("00280004", "MONOCHROME2")),
        "planar_configuration": int(value("00280006", 0) or 0),
        "number_of_frames": 1,
    }


def decode(transfer_syntax: str, raw: bytes, metadata: dict[str, Any]) -> np.ndarray:
    """One frame as an array (rows, columns[, samples]); YBR colour converted to RGB.

    A frame its decoder cannot read (a damaged codestream, attributes stored before ingest
    checked them) is refused with 406, as an encoding that cannot be decoded is: the stored
    bytes stay available with ``transfer-syntax=*``."""
    try:
        return _decode(transfer_syntax, raw, metadata)
    except (ValueError, RuntimeError, KeyError, AttributeError) as exc:
        raise not_acceptable(f"this frame cannot be decoded ({exc}); ask for the stored "
                             "encoding (transfer-syntax=*)") from None


def _decode(transfer_syntax: str, raw: bytes, metadata: dict[str, Any]) -> np.ndarray:
    options = pixel_options(metadata)
    if transfer_syntax in NATIVE:
        return _native_array(transfer_syntax, raw, options)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise not_acceptable(f"frames in transfer syntax {transfer_syntax} cannot be "
                            "decoded here; ask for the stored encoding (transfer-syntax=*)"
                            ) from None
    if not decoder.is_available:
        raise not_acceptable(f"no decoder installed for transfer syntax {transfer_syntax}")
    # pydicom annotates ``**kwargs: DecodeOptions`` where it means ``Unpack[DecodeOptions]``.
    array, _ = decoder.as_array(encapsulate([raw]), index=0,
                                as_rgb=True, **options)  # type: ignore[arg-type]
    return array


def _native_array(transfer_syntax: str, raw: bytes, options: dict[str, Any]) -> np.ndarray:
    bits = options["bits_allocated"]
    dtype = {8: "u1", 16: "u2", 32: "u4"}.get(bits)
    if dtype is None:
        raise not_acceptable(f"{bits}-bit native pixels cannot be rendered")
    if options["pixel_representation"] and bits > 8:
        dtype = dtype.replace("u", "i")
    order = ">" if transfer_syntax == "1.2.840.10008.1.2.2" else "<"
    array = np.frombuffer(raw, dtype=order + dtype if bits > 8 else dtype)
    rows, cols, samples = options["rows"], options["columns"], options["samples_per_pixel"]
    if samples > 1:
        if options["planar_configuration"] == 1:
            return array.reshape(samples, rows, cols).transpose(1, 2, 0)
        return array.reshape(rows, cols, samples)
    return array.reshape(rows, cols)


def decoded_bytes(array: np.ndarray) -> bytes:
    """Native little-endian, colour-by-pixel bytes of a decoded frame."""
    if array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()
