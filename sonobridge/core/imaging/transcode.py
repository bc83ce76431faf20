"""A stored object in an uncompressed transfer syntax, for a peer that accepts no other: written
to a temporary Part 10 file one frame at a time, so that pynetdicom sends it from disk.

pydicom reads the data set, decodes the frames (``Decoder.iter_array`` over the open file
holds one frame in memory at a time, and turns YBR colour into RGB) and writes the elements
around the pixel data. The Pixel Data element itself is written here, frame by frame, because
pydicom writes a value only from memory, and a decoded cine is ten times its JPEG size
(800 x 600 x 3 bytes x 1,000 frames is 1.4 GB). ``Dataset.decompress`` does the same in memory;
the attributes changed below are the ones it changes (Photometric Interpretation, Planar
Configuration, Pixel Data VR), and the SOP Instance UID is kept: a change of transfer syntax
does not make a new instance (PS3.5 10), and the peer asked for this one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
UNCOMPRESSED = (EXPLICIT_LE, IMPLICIT_LE)
# Always lossy (PS3.5 A.4): once decoded the image must still say it was lossy compressed
# (PS3.3 C.7.6.1.1.5), with the method used.
LOSSY_METHOD = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1"}
PIXEL_DATA = 0x7FE00010
ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
# After Pixel Data: padding carries nothing, signatures no longer hold for the new encoding.
DROPPED_AFTER_PIXELS = {0xFFFAFFFA, 0xFFFCFFFC}
CHUNK = 1024 * 1024


class CannotConvert(ValueError):
    """The object cannot be written in an uncompressed transfer syntax here."""


def can_convert(stored_syntax: str) -> bool:
    """Whether an object stored in ``stored_syntax`` can be sent uncompressed (video and
    syntaxes without an installed decoder cannot)."""
    if stored_syntax in UNCOMPRESSED:
        return True
    uid = UID(stored_syntax)
    # Big endian: pydicom would copy OW values (palettes, overlays) without swapping them.
    if uid.is_deflated or not uid.is_transfer_syntax or not uid.is_little_endian:
        return False
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def uncompressed_copy(source: str | Path, syntax: str, directory: str | None = None) -> Path:
    """A temporary file holding the object of ``source`` in ``syntax`` (Explicit or Implicit VR
    Little Endian); the caller deletes it. Raises :class:`CannotConvert`."""
    if syntax not in UNCOMPRESSED:
        raise CannotConvert(f"{syntax} is not an uncompressed transfer syntax")
    fd, name = tempfile.mkstemp(prefix=".transcode-", suffix=".dcm", dir=directory)
    target = Path(name)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            _convert(src, out, syntax)
    except Exception as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        if isinstance(exc, CannotConvert):
            raise
        raise CannotConvert(f"cannot decode {source}: {exc}") from exc
    return target


def _convert(src: BinaryIO, out: BinaryIO, syntax: str) -> None:
    ds = dcmread(src, stop_before_pixels=True)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if not can_convert(stored):
        raise CannotConvert(f"objects in {stored.name} cannot be decoded here")
    header = src.read(8)
    implicit_out = syntax == IMPLICIT_LE
    if len(header) < 8:  # no pixel data: the data set in the other encoding
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        dcmwrite(out, ds, implicit_vr=implicit_out, little_endian=True, enforce_file_format=True)
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
    if stored in UNCOMPRESSED:
        bits = int(ds.get("BitsAllocated", 16))
        _write_native_copy(ds, src, out, syntax, vr or ("OB" if bits <= 8 else "OW"), length)
    else:
        _write_decoded(ds, src, out, syntax, stored, vr or "OB")
    _skip_pixels(src, start, length, order)
    trailing = read_dataset(src, stored.is_implicit_VR, stored.is_little_endian)
    for tag in DROPPED_AFTER_PIXELS & set(trailing.keys()):
        del trailing[tag]
    if len(trailing):
        fp = DicomFileLike(out)
        fp.is_little_endian, fp.is_implicit_VR = True, implicit_out
        write_dataset(fp, trailing)


def _write_native_copy(ds: Dataset, src: BinaryIO, out: BinaryIO, syntax: str, vr: str,
                       length: int) -> None:
    """Little endian to little endian: the same pixel bytes, another element encoding."""
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    _write_header(ds, out, syntax)
    _pixel_element(out, syntax, vr, length)
    left = length
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise CannotConvert("the stored pixel data is truncated")
        out.write(chunk)
        left -= len(chunk)


def _write_decoded(ds: Dataset, src: BinaryIO, out: BinaryIO, syntax: str, stored: UID,
                   vr: str) -> None:
    decoder = get_decoder(stored)
    options = as_pixel_options(ds, transfer_syntax_uid=stored, pixel_keyword="PixelData",
                               pixel_vr=vr)
    frames = decoder.iter_array(src, as_rgb=True, **options)
    first = next(frames, None)
    if first is None:
        raise CannotConvert("the stored pixel data has no frames")
    array, properties = first
    count = int(options["number_of_frames"])
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
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    if stored in LOSSY_METHOD:
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = LOSSY_METHOD[stored]
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    _write_header(ds, out, syntax)
    _pixel_element(out, syntax, "OB" if bits <= 8 else "OW", length + length % 2)
    written = 0
    for array, _ in itertools.chain([first], frames):
        out.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        written += 1
    if written != count:
        raise CannotConvert(f"{written} frames decoded, Number of Frames says {count}")
    if length % 2:
        out.write(b"\0")


def _write_header(ds: Dataset, out: BinaryIO, syntax: str) -> None:
    dcmwrite(out, ds, implicit_vr=syntax == IMPLICIT_LE, little_endian=True,
             enforce_file_format=True)


def _pixel_element(out: BinaryIO, syntax: str, vr: str, length: int) -> None:
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    if syntax == IMPLICIT_LE:
        out.write(tag + struct.pack("<L", length))
    else:
        out.write(tag + vr.encode("ascii") + b"\0\0" + struct.pack("<L", length))


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

