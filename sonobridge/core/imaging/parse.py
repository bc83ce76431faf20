"""Reading a stored Part 10 file without loading its pixel data.

pydicom reads the header up to (not including) the pixel data; this module then walks the pixel
data element itself, with seeks, to build the frame table: where each frame's bytes are in the
file. Serving frame N is then one ranged read, whatever N, and a 2 GB cine never needs 2 GB of
memory. pydicom's own encapsulation helpers read the fragments into memory, which is what this
avoids; hence a small reader of item headers here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

ITEM = 0xFFFEE000
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
VIDEO = {f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


class DicomParseError(ValueError):
    """The bytes are not a DICOM dataset we can store, with the reason."""


@dataclass
class Fragment:
    offset: int  # of the fragment's bytes in the file
    length: int
    item: int  # of its item tag, counted from the first fragment's (as offset tables count)


@dataclass
class PixelLayout:
    """Where the pixel data is: native (one range per frame) or encapsulated (fragments)."""

    encapsulated: bool
    frames: list[list[tuple[int, int]]] = field(default_factory=list)  # per frame: (offset, len)
    value_offset: int = 0
    value_length: int = 0


@dataclass
class Parsed:
    dataset: Dataset  # the header (no pixel data), file meta included
    transfer_syntax: str
    pixels: PixelLayout | None


def has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_header(fp: BinaryIO) -> Dataset:
    """The dataset up to the pixel data; the file position is left at the pixel data tag."""
    try:
        return dcmread(fp, stop_before_pixels=True, force=False)
    except InvalidDicomError as exc:
        raise DicomParseError(f"not a DICOM Part 10 file: {exc}") from None
    except (EOFError, struct.error, ValueError, KeyError, NotImplementedError) as exc:
        raise DicomParseError(f"the DICOM header cannot be read: {exc}") from None


def parse(fp: BinaryIO, size: int) -> Parsed:
    """Header and frame table of the Part 10 file in ``fp`` (``size`` bytes)."""
    dataset = read_header(fp)
    meta = getattr(dataset, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not ts:
        raise DicomParseError("the file meta information has no Transfer Syntax UID")
    position = fp.tell()
    pixels = None
    if position < size and ts != DEFLATED:
        pixels = _pixel_layout(fp, position, size, ts, dataset)
    return Parsed(dataset, ts, pixels)


def _read(fp: BinaryIO, count: int) -> bytes:
    data = fp.read(count)
    if len(data) != count:
        raise DicomParseError("the file is truncated inside the pixel data")
    return data


def _pixel_layout(fp: BinaryIO, position: int, size: int, ts: str, ds: Dataset
                  ) -> PixelLayout | None:
    fp.seek(position)
    little = ts != EXPLICIT_BE
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", _read(fp, 4))
    if (group << 16 | element) != PIXEL_DATA:
        return None  # something else follows the header (e.g. Float Pixel Data): no frames
    if ts == IMPLICIT_LE:
        (length,) = struct.unpack("<I", _read(fp, 4))
    else:
        vr = _read(fp, 2)
        if vr in _LONG_VRS:
            _read(fp, 2)
            (length,) = struct.unpack(order + "I", _read(fp, 4))
        else:
            (length,) = struct.unpack(order + "H", _read(fp, 2))
    start = fp.tell()
    frames = _check_pixel_module(ds)
    if length != UNDEFINED:
        if start + length > size:
            raise DicomParseError("the file is truncated: pixel data is shorter than declared")
        return PixelLayout(False, _native_frames(ds, start, length, frames), start, length)
    fragments, bot, end = _fragments(fp, start, size)
    layout = PixelLayout(True, [], start, end - start)
    if ts in VIDEO:  # one compressed stream for the whole cine: it is "frame" 1
        layout.frames = [[(f.offset, f.length) for f in fragments]] if fragments else []
        return layout
    eot = _extended_offsets(ds)
    layout.frames = _frames_from_fragments(fp, fragments, bot, eot, frames)
    return layout


# PS3.3 C.7.6.3: the photometric interpretations and the samples per pixel each implies.
_PHOTOMETRIC_SAMPLES = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3,
    "YBR_FULL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3, "YBR_RCT": 3, "XYB": 3}


def _check_pixel_module(ds: Dataset) -> int:
    """The Image Pixel module must describe pixels a decoder can be asked for; an object
    that says 4 samples, 7 bits allocated or a made-up colour model is refused at the door
    rather than failing in every viewer that opens it. Returns the number of frames."""
    def number(keyword: str, default: int | None = None) -> int:
        value = ds.get(keyword, default)
        try:
            return int(value if value not in (None, "") else default)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DicomParseError(f"{keyword} {value!r} is not a number") from None

    rows, columns = number("Rows", 0), number("Columns", 0)
    if rows < 1 or columns < 1:
        raise DicomParseError(f"Rows and Columns ({rows} x {columns}) must both be at least 1")
    frames = number("NumberOfFrames", 1)
    if frames < 1:
        raise DicomParseError(f"Number of Frames ({frames}) must be at least 1")
    samples, bits = number("SamplesPerPixel", 1), number("BitsAllocated", 8)
    if bits not in (1, 8, 16, 32):
        raise DicomParseError(f"Bits Allocated {bits} is not 1, 8, 16 or 32")
    stored = number("BitsStored", bits)
    if not 1 <= stored <= bits:
        raise DicomParseError(f"Bits Stored {stored} does not fit in Bits Allocated {bits}")
    if number("PixelRepresentation", 0) not in (0, 1):
        raise DicomParseError("Pixel Representation must be 0 or 1")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    implied = _PHOTOMETRIC_SAMPLES.get(photometric)
    if implied is None:
        raise DicomParseError(f"Photometric Interpretation {photometric!r} is not one of "
                              f"{', '.join(_PHOTOMETRIC_SAMPLES)}")
    if samples != implied:
        raise DicomParseError(f"{photometric} has {implied} sample(s) per pixel, the object "
                              f"says {samples}")
    return frames


def _native_frames(ds: Dataset, start: int, length: int, frames: int
                   ) -> list[list[tuple[int, int]]]:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    pixels = rows * cols * samples
    # 1-bit frames are packed: exact only when each frame fills whole bytes
    frame_size = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    if frame_size == 0:
        return []
    if frame_size * frames > length:
        raise DicomParseError(f"pixel data holds {length} bytes, fewer than {frames} frames of "
                              f"{frame_size} bytes")
    return [[(start + i * frame_size, frame_size)] for i in range(frames)]


def _fragments(fp: BinaryIO, start: int, size: int
               ) -> tuple[list[Fragment], list[int], int]:
    """Item headers of encapsulated pixel data: the Basic Offset Table and each fragment."""
    fp.seek(start)
    tag, length = struct.unpack("<II", _read(fp, 8))
    if _swap(tag) != ITEM:
        raise DicomParseError("encapsulated pixel data does not start with an item")
    bot_bytes = _read(fp, length) if length else b""
    if len(bot_bytes) % 4:
        raise DicomParseError("the Basic Offset Table length is not a multiple of 4")
    bot = list(struct.unpack(f"<{len(bot_bytes) // 4}I", bot_bytes))
    fragments: list[Fragment] = []
    first_item = fp.tell()
    position = first_item
    while True:
        if position + 8 > size:
            raise DicomParseError("the file is truncated: encapsulated pixel data has no end")
        fp.seek(position)
        tag, length = struct.unpack("<II", _read(fp, 8))
        tag = _swap(tag)
        if tag == SEQUENCE_END:
            return fragments, bot, position + 8
        if tag != ITEM or length == UNDEFINED:
            raise DicomParseError("malformed encapsulated pixel data (expected an item)")
        if position + 8 + length > size:
            raise DicomParseError("the file is truncated inside a pixel data fragment")
        fragments.append(Fragment(position + 8, length, position - first_item))
        position += 8 + length


def _swap(tag: int) -> int:
    """(group, element) read as one little-endian uint32 -> group << 16 | element."""
    return ((tag & 0xFFFF) << 16) | (tag >> 16)


def _extended_offsets(ds: Dataset) -> list[int] | None:
    element = ds.get((0x7FE0, 0x0001))
    if element is None or not element.value:
        return None
    raw = element.value
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))


def _frames_from_fragments(fp: BinaryIO, fragments: list[Fragment], bot: list[int],
                           eot: list[int] | None, frames: int) -> list[list[tuple[int, int]]]:
    if not fragments:
        return []
    starts = eot or bot
    if starts:
        by_item = {f.item: i for i, f in enumerate(fragments)}
        indexes = [by_item.get(offset) for offset in starts]
        if None in indexes:
            raise DicomParseError("the pixel data offset table points between fragments")
        bounds = [*indexes, len(fragments)]
        return [[(f.offset, f.length) for f in fragments[bounds[i]:bounds[i + 1]]]
                for i in range(len(indexes))]
    if len(fragments) == frames:
        return [[(f.offset, f.length)] for f in fragments]
    if frames == 1:
        return [[(f.offset, f.length) for f in fragments]]
    # No offset table and more fragments than frames: a frame starts where a fragment starts
    # with a codestream marker (JPEG family SOI FFD8, JPEG 2000 SOC FF4F).
    groups: list[list[tuple[int, int]]] = []
    for fragment in fragments:
        fp.seek(fragment.offset)
        head = fp.read(2)
        if head in (b"\xff\xd8", b"\xff\x4f") or not groups:
            groups.append([])
        groups[-1].append((fragment.offset, fragment.length))
    if len(groups) != frames:
        raise DicomParseError(f"cannot tell {frames} frames apart in {len(fragments)} fragments "
                              "without an offset table")
    return groups


def transfer_syntax_name(uid: str) -> str:
    return UID(uid).name or uid
