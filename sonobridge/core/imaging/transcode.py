"""The one transcoder: a stored object in another transfer syntax, produced as a stream of
bytes one frame at a time. WADO-RS (``transfer-syntax=`` on a retrieve), WADO-URI, C-GET and
C-MOVE (a peer that accepts only uncompressed data) all use it.

Targets: Explicit and Implicit VR Little Endian (native pixels: copied when the stored ones
are native, decoded frame by frame otherwise) and JPEG Baseline (8-bit images, each frame
encoded on its own, encapsulated with an empty Basic Offset Table).

pydicom reads the data set, decodes the frames (``Decoder.iter_array`` over the open file
holds one frame in memory at a time, and turns YBR colour into RGB) and writes the elements
around the pixel data. The Pixel Data element itself is written here, frame by frame, because
pydicom writes a value only from memory, and a decoded cine is ten times its JPEG size
(800 x 600 x 3 bytes x 1,000 frames is 1.4 GB). ``Dataset.decompress`` does the same in
memory; the attributes changed below are the ones it changes (Photometric Interpretation,
Planar Configuration, Pixel Data VR), and the SOP Instance UID is kept: a change of transfer
syntax does not make a new instance (PS3.5 10), and the peer asked for this one.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

from sonobridge.core.imaging import codecs
from sonobridge.core.imaging.frames import plugin as decoding_plugin
from sonobridge.core.imaging.render import has_palette, palette_rgb
from sonobridge.core.limits import Limits

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE)
TARGETS = (*UNCOMPRESSED, JPEG_BASELINE)
# Always lossy (PS3.5 A.4): once decoded the image must still say it was lossy compressed
# (PS3.3 C.7.6.1.1.5), with the method used.
LOSSY_METHOD = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1"}
PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
# After Pixel Data: padding carries nothing, signatures no longer hold for the new encoding.
DROPPED_AFTER_PIXELS = {0xFFFAFFFA, 0xFFFCFFFC}
CHUNK = 1024 * 1024
# Palette Color Lookup Table module (PS3.3 C.7.9): gone once palette colour is RGB.
PALETTE = ("PaletteColorLookupTableUID",
           *(f"{c}PaletteColorLookupTable{p}" for c in ("Red", "Green", "Blue", "Alpha")
             for p in ("Descriptor", "Data")),
           *(f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue",
                                                                   "Alpha")))
# Modality LUT and VOI LUT modules (PS3.3 C.11.1, C.11.2): already applied to display values.
PRESENTED = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
             "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction",
             "VOILUTSequence")
# Frame -> 8-bit display values (grey or RGB) for the JPEG target; given by the archive,
# which knows windows and palettes (``core/imaging/render.py``).
Display = Callable[[np.ndarray], np.ndarray]


class CannotConvert(ValueError):
    """The object cannot be written in the asked transfer syntax here."""


def can_convert(stored_syntax: str, target: str = EXPLICIT_LE, bits_allocated: int = 8
                ) -> bool:
    """Whether an object stored in ``stored_syntax`` can be sent in ``target`` (video and
    syntaxes without an installed decoder cannot; JPEG Baseline takes 8-bit images only)."""
    if target not in TARGETS:
        return False
    if target == JPEG_BASELINE and bits_allocated != 8:
        return False
    if stored_syntax in UNCOMPRESSED:
        return True
    uid = UID(stored_syntax)
    # Big endian: pydicom would copy OW values (palettes, overlays) without swapping them.
    if uid.is_deflated or not uid.is_transfer_syntax or not uid.is_little_endian:
        return False
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def transcoded(src: BinaryIO, syntax: str, display: Display | None = None,
               limits: Limits | None = None) -> Iterator[bytes]:
    """The object read from ``src`` (a seekable Part 10 file) in ``syntax``, in chunks of at
    most about a frame. Raises :class:`CannotConvert` before the first chunk when the object
    cannot be converted, a 413 ``CoreError`` when a frame is beyond the limits (checked on
    the attributes and on the header inside the first compressed frame), and from the
    generator when the stored data turns out to be broken."""
    if syntax not in TARGETS:
        raise CannotConvert(f"{syntax} is not a transfer syntax this server converts to")
    ds = dcmread(src, stop_before_pixels=True)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if not can_convert(stored, syntax, bits):
        if syntax == JPEG_BASELINE and bits != 8:
            raise CannotConvert("only 8-bit images can be sent as JPEG baseline")
        raise CannotConvert(f"objects in {stored.name} cannot be decoded here")
    if stored not in UNCOMPRESSED or syntax == JPEG_BASELINE:
        _within(src, ds, stored, limits or Limits())
    return _convert(src, ds, stored, syntax, display)


def _within(src: BinaryIO, ds: Dataset, stored: UID, limits: Limits) -> None:
    """413 unless a frame, as its attributes and its codestream declare it, is within the
    limits (the file position is kept)."""
    start = src.tell()
    what = f"a frame of instance {ds.get('SOPInstanceUID', '?')}"
    limits.frame(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
                 int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8),
                 what)
    try:
        if codecs.readable(stored):
            order = "<" if stored.is_little_endian else ">"
            src.seek(start + (8 if stored.is_implicit_VR else 12))  # the Pixel Data header
            for _ in range(2):  # the Basic Offset Table, then the first fragment
                header = src.read(8)
                if len(header) < 8:
                    return
                group, element, size = struct.unpack(f"{order}HHL", header)
                if (group << 16 | element) != ITEM:
                    return
                if _ == 0:
                    src.seek(size, os.SEEK_CUR)
            found = codecs.declared(stored, src.read(min(size, codecs.HEADER_BYTES)))
            if found is not None:
                limits.frame(found.rows, found.columns, found.samples, found.bits, what)
    finally:
        src.seek(start)


def uncompressed_copy(source: BinaryIO | str | Path, syntax: str,
                      directory: str | Path | None = None) -> Path:
    """A temporary file holding the object of ``source`` (an open file or a path) in
    ``syntax`` (for pynetdicom, which sends a file path chunk by chunk); the caller deletes
    it. Raises :class:`CannotConvert`."""
    if syntax not in UNCOMPRESSED:
        raise CannotConvert(f"{syntax} is not an uncompressed transfer syntax")
    fd, name = tempfile.mkstemp(prefix=".transcode-", suffix=".dcm", dir=directory)
    target = Path(name)
    try:
        with contextlib.ExitStack() as stack, os.fdopen(fd, "wb") as out:
            src = source if not isinstance(source, str | Path) else \
                stack.enter_context(open(source, "rb"))
            for chunk in transcoded(src, syntax):
                out.write(chunk)
    except Exception as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        if isinstance(exc, CannotConvert):
            raise
        raise CannotConvert(f"cannot decode the stored object: {exc}") from exc
    return target


def _convert(src: BinaryIO, ds: Dataset, stored: UID, syntax: str,
             display: Display | None) -> Iterator[bytes]:
    header = src.read(8)
    implicit_out = syntax == IMPLICIT_LE
    if len(header) < 8:  # no pixel data: the data set in the other encoding
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        yield _header(ds, syntax)
        return
    order = "<" if stored.is_little_endian else ">"
    group, element = struct.unpack(f"{order}HH", header[:4])
    if (group << 16 | element) != PIXEL_DATA:
        raise CannotConvert("only (7FE0,0010) Pixel Data can be decoded here")
    if stored.is_implicit_VR:
        vr, length = None, struct.unpack(f"{order}L", header[4:])[0]
    else:
        vr = header[4:6].decode("ascii")
        length = struct.unpack(f"{order}L", src.read(4))[0]
    start = src.tell()
    bits = int(ds.get("BitsAllocated", 16))
    if syntax == JPEG_BASELINE:
        yield from _jpeg(ds, src, stored, vr or ("OB" if bits <= 8 else "OW"), display)
    elif stored in UNCOMPRESSED:
        yield from _native_copy(ds, src, syntax, vr or ("OB" if bits <= 8 else "OW"), length)
    else:
        yield from _decoded(ds, src, syntax, stored, vr or "OB")
    _skip_pixels(src, start, length, order)
    trailing = read_dataset(src, stored.is_implicit_VR, stored.is_little_endian)
    for tag in DROPPED_AFTER_PIXELS & set(trailing.keys()):
        del trailing[tag]
    if len(trailing) and syntax != JPEG_BASELINE:
        buffer = io.BytesIO()
        fp = DicomFileLike(buffer)
        fp.is_little_endian, fp.is_implicit_VR = True, implicit_out
        write_dataset(fp, trailing)
        yield buffer.getvalue()


def _native_copy(ds: Dataset, src: BinaryIO, syntax: str, vr: str, length: int
                 ) -> Iterator[bytes]:
    """Little endian to little endian: the same pixel bytes, another element encoding."""
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    yield _header(ds, syntax) + _pixel_element(syntax, vr, length)
    left = length
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise CannotConvert("the stored pixel data is truncated")
        yield chunk
        left -= len(chunk)


def _frames(ds: Dataset, src: BinaryIO, stored: UID, vr: str
            ) -> tuple[Iterator[tuple[np.ndarray, dict[str, Any]]], int]:
    """Decoded frames one at a time (RGB for colour), and how many there are."""
    decoder = get_decoder(stored)
    options = as_pixel_options(ds, transfer_syntax_uid=stored, pixel_keyword="PixelData",
                               pixel_vr=vr)
    # The same plugin as a decoded frame (Pillow for JPEG baseline): the same pixels either way.
    return decoder.iter_array(src, as_rgb=True, decoding_plugin=decoding_plugin(decoder),
                              **options), int(options["number_of_frames"])


def _decoded(ds: Dataset, src: BinaryIO, syntax: str, stored: UID, vr: str
             ) -> Iterator[bytes]:
    frames, count = _frames(ds, src, stored, vr)
    first = next(frames, None)
    if first is None:
        raise CannotConvert("the stored pixel data has no frames")
    array, properties = first
    bits = int(ds.BitsAllocated)
    if array.dtype.itemsize * 8 != bits:
        raise CannotConvert(f"decoded {array.dtype} pixels do not fit Bits Allocated {bits}")
    length = array.nbytes * count
    if length >= 0xFFFFFFFE:
        raise CannotConvert("the decoded pixel data is too long for one DICOM element")
    ds.PhotometricInterpretation = properties["photometric_interpretation"]
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = int(properties.get("planar_configuration", 0))
    if "pixel_representation" in properties:
        ds.PixelRepresentation = int(properties["pixel_representation"])
    _drop_offset_tables(ds)
    _mark_lossy(ds, stored)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    yield _header(ds, syntax) + _pixel_element(syntax, "OB" if bits <= 8 else "OW",
                                               length + length % 2)
    written = 0
    for array, _ in itertools.chain([first], frames):
        yield array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        written += 1
    if written != count:
        raise CannotConvert(f"{written} frames decoded, Number of Frames says {count}")
    if length % 2:
        yield b"\0"


def _jpeg(ds: Dataset, src: BinaryIO, stored: UID, vr: str, display: Display | None
          ) -> Iterator[bytes]:
    """Each frame decoded (native frames read as they are), made 8-bit, and JPEG-encoded:
    one fragment per frame.

    JPEG baseline holds unsigned 8-bit samples, grey or colour. Colour (RGB, YBR decoded to
    RGB) and unsigned grey keep their values, and the attributes that give them meaning
    (MONOCHROME1, windows, look-up tables) stay. Palette colour becomes RGB through its
    palette (the indices alone would show as grey), and its palette attributes go. Signed
    grey cannot be stored as it is: it becomes display values (``display``: Modality LUT,
    VOI, MONOCHROME1 inverted), and the attributes that would transform them again go."""
    from PIL import Image

    if stored in UNCOMPRESSED:
        frames: Iterator[np.ndarray] = _native_frames(ds, src, stored, vr)
    else:
        decoded, _ = _frames(ds, src, stored, vr)
        frames = (array for array, _ in decoded)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    palette = photometric == "PALETTE COLOR" and has_palette(ds)
    colour = int(ds.get("SamplesPerPixel", 1)) == 3 or palette
    signed = not colour and int(ds.get("PixelRepresentation", 0) or 0) == 1
    lut = Dataset()  # the palette, for pydicom, which reads segmented tables in its encoding
    lut.file_meta = FileMetaDataset()
    lut.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)  # big endian is not converted
    if palette:
        for keyword in PALETTE:
            if keyword in ds:
                lut[keyword] = ds[keyword]
                delattr(ds, keyword)
        ds.SamplesPerPixel = 3
    if signed:
        for keyword in PRESENTED:
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelRepresentation = 0
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    elif photometric != "MONOCHROME1" or signed:
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.HighBit = 8, 7
    _drop_offset_tables(ds)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.file_meta.TransferSyntaxUID = UID(JPEG_BASELINE)
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    yield (_header(ds, JPEG_BASELINE) + tag + b"OB\0\0" + struct.pack("<L", 0xFFFFFFFF)
           + struct.pack("<HHL", 0xFFFE, 0xE000, 0))  # an empty Basic Offset Table
    for array in frames:
        if palette:
            array = palette_rgb(array, lut)
        elif array.dtype != np.uint8:
            if display is None:
                raise CannotConvert("only 8-bit images can be sent as JPEG baseline")
            array = display(array)
        buffer = io.BytesIO()
        # 4:2:2 (subsampling=1) as YBR_FULL_422 says; Pillow's default is 4:2:0
        Image.fromarray(array).save(buffer, format="JPEG", quality=90, subsampling=1)
        data = buffer.getvalue()
        if len(data) % 2:
            data += b"\0"
        yield struct.pack("<HHL", 0xFFFE, 0xE000, len(data)) + data
    yield struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _native_frames(ds: Dataset, src: BinaryIO, stored: UID, vr: str) -> Iterator[np.ndarray]:
    """Native frames as stored (options read now: the caller then rewrites ``ds``)."""
    decoder = get_decoder(stored)
    options = as_pixel_options(ds, transfer_syntax_uid=stored, pixel_keyword="PixelData",
                               pixel_vr=vr)
    return (array for array, _ in decoder.iter_array(src, **options))


def _drop_offset_tables(ds: Dataset) -> None:
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)


def _mark_lossy(ds: Dataset, stored: UID) -> None:
    if stored in LOSSY_METHOD:
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = LOSSY_METHOD[stored]


def _header(ds: Dataset, syntax: str) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=syntax == IMPLICIT_LE, little_endian=True,
             enforce_file_format=True)
    return buffer.getvalue()


def _pixel_element(syntax: str, vr: str, length: int) -> bytes:
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    if syntax == IMPLICIT_LE:
        return tag + struct.pack("<L", length)
    return tag + vr.encode("ascii") + b"\0\0" + struct.pack("<L", length)


def _skip_pixels(src: BinaryIO, start: int, length: int, order: str) -> None:
    """Past the Pixel Data value: a defined length, or items up to the sequence delimiter."""
    src.seek(start)
    if length != 0xFFFFFFFF:
        src.seek(start + length)
        return
    while True:
        header = src.read(8)
        if len(header) < 8:
            return
        group, element, size = struct.unpack(f"{order}HHL", header)
        if (group << 16 | element) == SEQUENCE_END:
            return
        if (group << 16 | element) != ITEM:
            raise CannotConvert("malformed encapsulated pixel data")
        src.seek(size, os.SEEK_CUR)
