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
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
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


def _check_complete(dataset: Dataset, position: int, size: int) -> None:
    """pydicom reads a file cut inside its header without a word: the cut element keeps the
    bytes there were, a cut tag is dropped. An element shorter than its length, or a header
    that stops short of the file's end, is a truncated file, refused as one."""
    for element in dataset._dict.values():  # the raw elements, as read (not converted)
        if isinstance(element, RawDataElement) and element.length != UNDEFINED and \
                isinstance(element.value, bytes) and len(element.value) < element.length:
            raise DicomParseError(f"the file is truncated inside element {element.tag}")
    if position < size or not dataset._dict:
        return
    last = dataset._dict[max(dataset._dict)]  # the last element read (sequences are parsed)
    if isinstance(last, RawDataElement) and last.length != UNDEFINED and \
            last.value_tell + last.length < size:
        raise DicomParseError("the file is truncated inside the header")


def parse(fp: BinaryIO, size: int) -> Parsed:
    """Header and frame table of the Part 10 file in ``fp`` (``size`` bytes)."""
    dataset = read_header(fp)
    meta = getattr(dataset, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not ts:
        raise DicomParseError("the file meta information has no Transfer Syntax UID")
    if ts != DEFLATED:  # a deflated dataset's positions are in the inflated stream
        _check_complete(dataset, fp.tell(), size)
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
    order = "<" if ts != EXPLICIT_BE else ">"
    group, element = struct.unpack(order + "HH", _read(fp, 4))
    if (group << 16 | element) != PIXEL_DATA:
        return None  # something else follows the header (e.g. Float Pixel Data): no frames
    head = _read(fp, 4)
    # Some writers encode the dataset in implicit VR under an explicit transfer syntax;
    # pydicom reads such headers (with a warning), so the pixel data element is read the
    # same way: a VR is two upper-case letters, anything else is the implicit length.
    if ts == IMPLICIT_LE or not (head[:2].isalpha() and head[:2].isupper()):
        (length,) = struct.unpack(order + "I", head)
    elif head[:2] in _LONG_VRS:
        (length,) = struct.unpack(order + "I", _read(fp, 4))
    else:
        (length,) = struct.unpack(order + "H", head[2:])
    start = fp.tell()
    if length == 0:
        return PixelLayout(False, [], start, 0)  # an empty element: no frames to serve
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
    """One byte range per frame. The size comes from pydicom's ``get_expected_length``,
    which knows every photometric interpretation (``YBR_FULL_422`` holds two samples per
    pixel, not three) and packs 1-bit pixels across frames."""
    try:
        total = get_expected_length(ds, "bytes")
    except (AttributeError, ValueError, TypeError) as exc:
        raise DicomParseError(f"the Image Pixel module is incomplete: {exc}") from None
    if total > length:
        raise DicomParseError(f"pixel data holds {length} bytes, fewer than the {total} bytes "
                              f"of {frames} frame(s) its attributes describe")
    if int(ds.get("BitsAllocated", 8)) == 1 and frames > 1 and \
            (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))) % 8:
        # 1-bit frames that do not fill whole bytes share bytes with their neighbours:
        # stored whole, served as the object, not as byte ranges per frame.
        return []
    frame_size = total // frames
    return [[(start + i * frame_size, frame_size)] for i in range(frames)]


def _fragments(fp: BinaryIO, start: int, size: int
               ) -> tuple[list[Fragment], list[int], int]:
    """The Basic Offset Table and each fragment of encapsulated pixel data, by pydicom's
    ``parse_basic_offsets`` and ``parse_fragments`` (which seek past fragments instead of
    reading them); what they do not check, that the items and the sequence end lie inside
    the file, is checked here."""
    fp.seek(start)
    try:
        bot = parse_basic_offsets(fp)
        first_item = fp.tell()
        _, offsets = parse_fragments(fp)
    except (ValueError, struct.error) as exc:
        raise DicomParseError(f"malformed encapsulated pixel data: {exc}") from None
    if first_item > size:
        raise DicomParseError("the file is truncated inside the Basic Offset Table")
    ends = [*offsets[1:]]
    if offsets:
        fp.seek(offsets[-1] + 4)
        (last_length,) = struct.unpack("<I", _read(fp, 4))
        ends.append(offsets[-1] + 8 + last_length)
    end = ends[-1] if ends else first_item
    if end > size:
        raise DicomParseError("the file is truncated inside a pixel data fragment")
    fp.seek(end)
    if end + 8 > size or _swap(struct.unpack("<I", fp.read(4))[0]) != SEQUENCE_END:
        raise DicomParseError("the file is truncated: encapsulated pixel data has no end")
    fragments = [Fragment(offset + 8, stop - offset - 8, offset - first_item)
                 for offset, stop in zip(offsets, ends, strict=True)]
    return fragments, bot, end + 8


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
    if starts and len(starts) != frames:
        raise DicomParseError(f"the offset table lists {len(starts)} frames, Number of Frames "
                              f"says {frames}")
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
