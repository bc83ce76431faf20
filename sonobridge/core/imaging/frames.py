"""Frames: read in their stored encoding through the frame table, decode one, describe one.

Reading frame N is one or a few ranged reads at offsets found at ingest: no parse of the
file, the same cost for the last frame as for the first. Decoding touches that frame only,
native or compressed, through pydicom's decoders: the array is the one ``Dataset.pixel_array``
gives for that frame, YBR colour out as RGB.

JPEG baseline, the cine's usual encoding, is decoded by pydicom's Pillow plugin
(libjpeg-turbo), not its first choice pylibjpeg (libjpeg 9), which is two to three times
slower; the two differ by a few levels where chroma was subsampled, as conformant JPEG
decoders may. A grey or YCbCr JPEG baseline frame (what ultrasound cines are) goes straight
to Pillow, as that plugin does, without the encapsulation and plugin loop around it and with
libjpeg-turbo's own YCbCr to RGB step: the same pixels as pydicom's Pillow plugin followed by
its ``convert_color_space`` (tested), in a third of its time (600 x 800: 2.3 ms, where
pylibjpeg through pydicom took 17 ms; ``bench/decode.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any

import numpy as np
import orjson
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

from sonobridge.core.errors import CoreError, not_acceptable, not_found

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
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# Photometric interpretations whose JPEG baseline frames Pillow decodes to what pydicom gives
# (as_rgb): grey as it is, YCbCr (JFIF, no Adobe marker) converted to RGB. An RGB one is
# encoded without a colour transform, which libjpeg would apply: pydicom's path for it.
_DIRECT = {"MONOCHROME1": "L", "MONOCHROME2": "L", "YBR_FULL": "RGB", "YBR_FULL_422": "RGB"}


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


def pixel_options(metadata: dict[str, Any], transfer_syntax: str | None = None
                  ) -> dict[str, Any]:
    """pydicom's decoding options for one frame of an object described by ``metadata``."""
    def value(tag: str, default: Any = None) -> Any:
        values = (metadata.get(tag) or {}).get("Value") or []
        return values[0] if values else default

    bits_allocated = int(value("00280100", 8))
    options = {
        "rows": int(value("00280010", 0)), "columns": int(value("00280011", 0)),
        "samples_per_pixel": int(value("00280002", 1)),
        "bits_allocated": bits_allocated,
        "bits_stored": int(value("00280101", bits_allocated)),
        "pixel_representation": int(value("00280103", 0)),
        "photometric_interpretation": str(value("00280004", "MONOCHROME2")),
        "planar_configuration": int(value("00280006", 0) or 0),
        "number_of_frames": 1, "pixel_keyword": "PixelData",
        "as_rgb": True,  # YBR colour as RGB, as ``pixel_array`` gives it
    }
    if transfer_syntax in NATIVE:
        # Big endian OW holds 8-bit pixels byte-swapped in 16-bit words: pydicom swaps them
        # back when it knows the VR.
        options["pixel_vr"] = str((metadata.get("7FE00010") or {}).get("vr") or
                                  ("OB" if bits_allocated <= 8 else "OW"))
    return options


def stored_as_decoded(metadata: dict[str, Any]) -> bool:
    """Whether a native frame's stored bytes are already what :func:`decode` gives: colour
    by pixel in RGB, every allocated bit a stored bit (nothing to mask, nothing to
    sign-extend). Then a decoded frame is served from the stored bytes, without decoding."""
    options = pixel_options(metadata)
    return (options["photometric_interpretation"] in ("MONOCHROME1", "MONOCHROME2", "RGB",
                                                      "PALETTE COLOR")
            and options["bits_allocated"] in (8, 16, 32)
            and options["bits_stored"] == options["bits_allocated"]
            and (options["samples_per_pixel"] == 1 or options["planar_configuration"] == 0))


def decode(transfer_syntax: str, raw: bytes, metadata: dict[str, Any]) -> np.ndarray:
    """One frame as an array (rows, columns[, samples]), as pydicom's ``pixel_array`` gives
    it: native or compressed, through pydicom's decoders (unused high bits masked, signed
    values sign-extended, 4:2:2 upsampled, YBR colour converted to RGB, planar
    configuration undone; palette colour stays indices).

    A frame its decoder cannot read (a damaged codestream, attributes stored before ingest
    checked them) is refused with 406, as an encoding that cannot be decoded is: the stored
    bytes stay available with ``transfer-syntax=*``."""
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise not_acceptable(f"frames in transfer syntax {transfer_syntax} cannot be "
                             "decoded here; ask for the stored encoding (transfer-syntax=*)"
                             ) from None
    if not decoder.is_available:
        raise not_acceptable(f"no decoder installed for transfer syntax {transfer_syntax}")
    try:
        options = pixel_options(metadata, transfer_syntax)
        if transfer_syntax == JPEG_BASELINE and (direct := _jpeg_direct(raw, options)) is not None:
            return direct
        source = raw if transfer_syntax in NATIVE else encapsulate([raw])
        # pydicom annotates ``**kwargs: DecodeOptions`` where it means ``Unpack[...]``.
        array, _ = decoder.as_array(source, index=0, decoding_plugin=plugin(decoder),
                                    **options)
    except Exception as exc:  # each decoder plugin fails in its own way
        message = f"this frame cannot be decoded ({exc})"
        raise CoreError(406, "not-supported", f"{message}; ask for the stored encoding "
                        "(transfer-syntax=*)",
                        headers={"Warning": f'299 SonoBridge "{_quoted(message)}"'}) from None
    return array


def plugin(decoder: Any) -> str:
    """The plugin to ask pydicom's ``decoder`` for: Pillow for JPEG baseline when installed,
    else pydicom's own order (an empty name)."""
    uid = str(decoder.UID)
    return "pillow" if uid == JPEG_BASELINE and "pillow" in decoder.available_plugins else ""


def _jpeg_direct(raw: bytes, options: dict[str, Any]) -> np.ndarray | None:
    """A grey or YCbCr JPEG baseline frame decoded by Pillow, as pydicom's Pillow plugin
    would with ``as_rgb``; ``None`` when the frame is another kind (pydicom's path then). A
    frame whose size or components are not the attributes' is refused, as pydicom would."""
    mode = _DIRECT.get(options["photometric_interpretation"])
    if mode is None or options["bits_allocated"] != 8 or options["bits_stored"] != 8 or \
            options["pixel_representation"] != 0:
        return None
    with Image.open(BytesIO(raw), formats=("JPEG",)) as image:
        if image.mode != mode or "adobe_transform" in image.info:
            return None
        rows, columns, samples = options["rows"], options["columns"], \
            options["samples_per_pixel"]
        if image.size != (columns, rows) or samples != len(mode):
            raise ValueError(f"the frame is {image.size[0]} x {image.size[1]} {image.mode}, "
                             f"not the {columns} x {rows} of the attributes")
        # libjpeg-turbo converts YCbCr to RGB in its own decoder (JFIF's equations, as
        # pydicom's convert_color_space); a truncated stream raises here.
        data = image.tobytes()
    shape = (rows, columns) if samples == 1 else (rows, columns, samples)
    return np.ndarray(shape, np.uint8, buffer=data)  # a view of the bytes, read-only


def _quoted(text: str) -> str:
    """Text for a quoted-string in a header: one line, no quote or backslash."""
    text = " ".join(text.split()).replace("\\", "/").replace('"', "'")[:200]
    return text.encode("ascii", "replace").decode("ascii")


def decoded_bytes(array: np.ndarray) -> bytes:
    """Native little-endian, colour-by-pixel bytes of a decoded frame (the decoder's own
    bytes when the array is a view of them: a decoded 720p frame is 2.7 MB not to copy)."""
    if array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if isinstance(array.base, bytes) and len(array.base) == array.nbytes and \
            array.flags.c_contiguous:
        return array.base
    return np.ascontiguousarray(array).tobytes()
