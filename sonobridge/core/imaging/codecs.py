"""The geometry a compressed frame declares in its own header: what a decoder will allocate.

A JPEG, JPEG-LS or JPEG 2000 decoder sizes its output from the codestream's header (SOFn,
SOF55, SIZ), not from the DICOM Rows and Columns: that header is what ``core/limits.py``
checks, and what ingest compares with the attributes. JPEG and JPEG-LS headers are read with
pydicom's own parser; pydicom reads no size from a JPEG 2000 codestream, so its SIZ marker
segment (ISO/IEC 15444-1 A.5.1) is read here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.pixels.utils import _get_jpg_parameters

JPEG_FAMILY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
               "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
J2K_FAMILY = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
              "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
              "1.2.840.10008.1.2.4.203"}
HEADER_BYTES = 64 * 1024  # enough for any real frame header, tables and APP segments


@dataclass(frozen=True)
class Geometry:
    rows: int
    columns: int
    samples: int
    bits: int


def declared(transfer_syntax: str, head: bytes) -> Geometry | None:
    """The geometry in the first bytes of a compressed frame, or ``None`` when the syntax is
    not one whose decoder sizes itself from the stream (or the header cannot be read)."""
    if transfer_syntax in JPEG_FAMILY:
        info = _get_jpg_parameters(head)
        try:
            return Geometry(int(info["height"]), int(info["width"]), int(info["components"]),
                            int(info["precision"]))
        except (KeyError, TypeError, ValueError):
            return None
    if transfer_syntax in J2K_FAMILY:
        return _j2k(head)
    return None


def readable(transfer_syntax: str) -> bool:
    """Whether frames of this syntax carry a geometry of their own."""
    return transfer_syntax in JPEG_FAMILY or transfer_syntax in J2K_FAMILY


def _j2k(head: bytes) -> Geometry | None:
    offset = 0
    if head.startswith(b"\x00\x00\x00\x0cjP  "):  # a JP2 file: find the codestream box
        offset = 12
        while offset + 8 <= len(head):
            length = int.from_bytes(head[offset:offset + 4], "big")
            if head[offset + 4:offset + 8] == b"jp2c":
                offset += 8
                break
            if length < 8:
                return None
            offset += length
    if head[offset:offset + 4] != b"\xff\x4f\xff\x51" or len(head) < offset + 42:
        return None
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz, then Ssiz per
    # component
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", head[offset + 8:offset + 24])
    csiz = int.from_bytes(head[offset + 40:offset + 42], "big")
    ssiz = head[offset + 42] if len(head) > offset + 42 else 7
    return Geometry(max(ysiz - yosiz, 0), max(xsiz - xosiz, 0), csiz, (ssiz & 0x7F) + 1)
