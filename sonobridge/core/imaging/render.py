"""Rendered images and cine videos (PS3.18 8.3.5, 9.x /rendered and /thumbnail).

Pixels become 8-bit display values (PS3.4 N.2, with pydicom's Modality LUT, VOI LUT, windowing
and palette functions: window from the request, else the object's VOI LUT or window with its
VOI LUT Function, else the stored range; palette colour through its LUT; MONOCHROME1
inverted), then JPEG or PNG
(Pillow), an animated GIF, or an H.264 MP4 (PyAV) at the cine's own frame rate.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
)
from pydicom.uid import UID

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
CINE_TYPES = ("video/mp4", "image/gif")
EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _value(metadata: dict[str, Any], tag: str, default: Any = None) -> Any:
    values = (metadata.get(tag) or {}).get("Value") or []
    return values[0] if values else default


def frame_rate(metadata: dict[str, Any]) -> float:
    """Frames per second from Cine Rate, Frame Time or Recommended Display Frame Rate."""
    for tag in ("00180040", "00082144"):
        rate = _value(metadata, tag)
        if rate:
            return float(rate)
    frame_time = _value(metadata, "00181063")
    if frame_time:
        return 1000.0 / float(frame_time)
    return 25.0


# What rendering reads from the stored metadata (numbers): Image Pixel, Modality LUT and VOI
# LUT attributes. Look-up tables are read from the stored header instead: their data are
# bulk data the metadata only links to, and DICOM JSON loses the byte order of big endian
# OW values.
_NUMBERS = ("00280002", "00280004", "00280006", "00280100", "00280101", "00280102",
            "00280103", "00281050", "00281051", "00281052", "00281053", "00281054",
            "00281056")
_TABLES = ("ModalityLUTSequence", "VOILUTSequence",
           *(f"{c}PaletteColorLookupTable{p}" for c in ("Red", "Green", "Blue", "Alpha")
             for p in ("Descriptor", "Data")),
           *(f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue",
                                                                   "Alpha")))
_PALETTE_DATA = tuple(f"{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue",
                                                                 "Alpha"))
_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
# A window asked for: center, width and VOI LUT Function (one of ``_FUNCTIONS``, PS3.3
# C.11.2.1.3; the ``window`` parameter of PS3.18 8.3.5.1.3 names them linear, linear-exact and
# sigmoid).
Window = tuple[float, float, str]


def needs_header(metadata: dict[str, Any]) -> bool:
    """Whether rendering needs look-up tables from the stored header."""
    return _value(metadata, "00280004") == "PALETTE COLOR" or \
        "00283000" in metadata or "00283010" in metadata


def display_attributes(metadata: dict[str, Any], header: Dataset | None = None) -> Dataset:
    """The attributes :func:`to_display` follows, as a pydicom data set: numbers from the
    metadata, look-up tables from ``header`` (the stored header, when
    :func:`needs_header`)."""
    try:
        ds = Dataset.from_json({tag: metadata[tag] for tag in _NUMBERS if tag in metadata})
    except (ValueError, TypeError, KeyError, AttributeError):
        ds = Dataset()  # damaged values: rendered as if absent
    if header is None:
        return ds
    little = header.file_meta.get("TransferSyntaxUID", EXPLICIT_LE) != BIG_ENDIAN
    for keyword in _TABLES:
        if keyword in header:
            ds[keyword] = header[keyword]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    if not little:
        # pydicom reads segmented palettes and LUT sequences in the file's byte order, but
        # plain palette data in the machine's: swap it to little endian like the rest.
        for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
            for item in ds.get(keyword) or []:
                if "LUTData" in item and item["LUTData"].VR == "OW":
                    item.LUTData = _swapped(item.LUTData)
        for keyword in (*_PALETTE_DATA, *(f"Segmented{k}" for k in _PALETTE_DATA)):
            if keyword in ds:
                ds[keyword].value = _swapped(ds[keyword].value)
    return ds


def _swapped(data: bytes) -> bytes:
    return np.frombuffer(data[:len(data) // 2 * 2], ">u2").astype("<u2").tobytes()


def to_display(array: np.ndarray, attrs: Dataset, window: Window | None = None
               ) -> np.ndarray:
    """8-bit greyscale (rows, cols) or RGB (rows, cols, 3) display values of a decoded frame
    (PS3.4 N.2): palette colour through its LUT; grey through the Modality LUT (rescale or
    LUT), then the window asked for, else the VOI LUT, else the object's window with its
    VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID; PS3.3 C.11.2.1.2), else the stored
    range; MONOCHROME1 inverted. pydicom's ``apply_*`` functions do the work."""
    photometric = str(attrs.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR" and has_palette(attrs):
        return palette_rgb(array, attrs)
    bits = _int(attrs, "BitsStored", array.dtype.itemsize * 8)
    if array.ndim == 3:
        if array.dtype == np.uint8:
            return array
        # deeper colour (16-bit RGB): its stored range onto 0..255
        rgb: np.ndarray = np.rint(_to_8_bits(array.astype(np.float64), 0, 2.0 ** bits - 1))
        return rgb.astype(np.uint8)
    values = apply_modality_lut(array, attrs)
    center_width = window[:2] if window else _object_window(attrs)
    function = window[2] if window else str(attrs.get("VOILUTFunction", "") or "")
    lut = _voi_lut(attrs)
    if window is None and lut is not None:
        depth = int(lut[2])
        display = _to_8_bits(apply_voi(values, attrs).astype(np.float64), 0, 2.0 ** depth - 1)
    elif center_width is not None and (windowing := _windowing(*center_width, function)):
        # The output range of the window is set to 0..255 (an 8-bit unsigned "image" in the
        # data set given to pydicom): the display values themselves.
        display = apply_windowing(values.astype(np.float64), windowing)
    else:
        rescaled = "ModalityLUTSequence" in attrs or \
            float(attrs.get("RescaleSlope", 1) or 1) != 1 or \
            float(attrs.get("RescaleIntercept", 0) or 0) != 0
        if bits <= 8 and not rescaled:
            # No VOI: 8-bit values are shown as they are, not stretched.
            signed = _int(attrs, "PixelRepresentation", 0) == 1
            low = -(2.0 ** (bits - 1)) if signed else 0.0
            display = _to_8_bits(values.astype(np.float64), low, low + 2.0 ** bits - 1)
        else:
            display = _to_8_bits(values.astype(np.float64), float(values.min()),
                                 float(values.max()))
    out: np.ndarray = np.clip(np.rint(display), 0, 255).astype(np.uint8)
    return 255 - out if photometric == "MONOCHROME1" else out


def jpeg_values(array: np.ndarray, attrs: Dataset) -> np.ndarray:
    """8-bit values of a decoded frame for a JPEG baseline encoding of it (a frame asked for
    as ``image/jpeg``), which the receiver reads with the object's attributes: unsigned 8-bit
    grey and colour as they are (MONOCHROME1 not inverted, no window: the receiver does
    that), palette colour through its palette (lossy JPEG would scramble indices), anything
    else as display values (:func:`to_display`), the closest 8 bits can hold."""
    photometric = str(attrs.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR" and has_palette(attrs):
        return palette_rgb(array, attrs)
    if array.dtype == np.uint8:
        return array
    return to_display(array, attrs)


def has_palette(attrs: Dataset) -> bool:
    return any(k in attrs for k in ("RedPaletteColorLookupTableData",
                                    "SegmentedRedPaletteColorLookupTableData"))


def palette_rgb(array: np.ndarray, attrs: Dataset) -> np.ndarray:
    """8-bit RGB of palette colour indices, through the palette (pydicom's
    ``apply_color_lut``; an alpha table is left out). 16-bit entries keep their top 8 bits;
    tables that declare 16 bits but hold 8-bit values (seen in real files) are used as they
    are. Which of the two is decided on the whole table, not on the frame: every frame of a
    cine gets the same colours."""
    rgb = apply_color_lut(array, attrs)[..., :3]
    if rgb.dtype != np.uint8:
        descriptor = attrs.RedPaletteColorLookupTableDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 65536
        table = apply_color_lut(np.arange(first, first + entries), attrs)[..., :3]
        if int(table.max()) > 255:
            rgb = rgb >> 8
    return np.ascontiguousarray(rgb.astype(np.uint8))


def _int(attrs: Dataset, keyword: str, default: int) -> int:
    try:
        return int(attrs.get(keyword, default))
    except (TypeError, ValueError):
        return default


def _to_8_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
    # A linear map of [low, high] onto 0..255: the last step of every path above (pydicom
    # leaves its results in the range of the input or of the LUT).
    return np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255


def _voi_lut(attrs: Dataset) -> Any:
    items = attrs.get("VOILUTSequence") or []
    if items and "LUTDescriptor" in items[0] and "LUTData" in items[0]:
        return items[0].LUTDescriptor
    return None


def _object_window(attrs: Dataset) -> tuple[float, float] | None:
    """The object's first window (center, width), if it has one."""
    values = [attrs.get(k) for k in ("WindowCenter", "WindowWidth")]
    try:
        center, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in values)
    except (TypeError, ValueError, IndexError):
        return None
    return center, width


def _windowing(center: float, width: float, function: str) -> Dataset | None:
    """A data set for pydicom's ``apply_windowing`` whose output range is 0..255."""
    function = function.upper() if function.upper() in _FUNCTIONS else "LINEAR"
    if function == "LINEAR":
        width = max(width, 1.0)  # PS3.3 C.11.2.1.2.1: at least 1 (below, a threshold)
    elif width <= 0:
        return None
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 8, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    return ds


def _image(display: np.ndarray, viewport: tuple[int, int] | None) -> Image.Image:
    image = Image.fromarray(display, "RGB" if display.ndim == 3 else "L")
    if viewport is not None:
        image.thumbnail(viewport, Image.Resampling.LANCZOS)
    return image


def encode_image(display: np.ndarray, media: str, *, quality: int = 90,
                 viewport: tuple[int, int] | None = None) -> bytes:
    image = _image(display, viewport)
    out = io.BytesIO()
    if media == "image/png":
        image.save(out, "PNG")
    elif media == "image/gif":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "GIF")
    else:
        image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_gif(target: str, frames: Iterable[np.ndarray], fps: float,
              viewport: tuple[int, int] | None = None) -> None:
    """An animated GIF. Pillow's GIF writer keeps every frame until the end (to compare
    neighbours); each is kept only as its palette image, one byte per pixel."""
    images = (_image(f, viewport).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames)
    first = next(images, None)
    if first is None:
        raise ValueError("no frame to show")
    first.save(target, "GIF", save_all=True, append_images=images, loop=0,
               duration=max(round(1000 / fps), 20))


def write_mp4(target: str, frames: Iterable[np.ndarray], fps: float,
              viewport: tuple[int, int] | None = None) -> None:
    """H.264 in MP4 (yuv420p, even dimensions), playable in every browser, encoded as the
    frames come: one decoded frame in memory at a time, whatever the length of the cine.
    ``faststart`` puts the index first (playback starts before the end arrives); FFmpeg
    rewrites the file for that, so ``target`` is a real file."""
    import av

    with av.open(target, mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = None
        width = height = 0
        for display in frames:
            image = _image(display, viewport).convert("RGB")
            if stream is None:
                width, height = image.size[0] - image.size[0] % 2, image.size[1] - image.size[1] % 2
                stream = container.add_stream("libx264",
                                              rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": "20", "preset": "veryfast"}
            frame = av.VideoFrame.from_ndarray(np.asarray(image.crop((0, 0, width, height))),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frame to show")
        for packet in stream.encode():
            container.mux(packet)


def video_to_mp4(source: str, target: str, fps: float,
                 check: Callable[[], None] = lambda: None) -> None:
    """A DICOM video (an H.264/HEVC/MPEG-2 elementary stream, in the file ``source``) as MP4.

    Elementary streams carry no timestamps. Without frame reordering (no B-frames) the
    packets are copied as they are, numbered at the cine's frame rate: no decoding, no
    quality loss. Whether the stream reorders is known from its parameter sets after the
    first few frames; only a stream that does is decoded and encoded again, frame by frame.
    """
    import av

    rate = Fraction(fps).limit_denominator(1000)
    with av.open(source, mode="r") as probe:
        codec = probe.streams.video[0].codec_context.name
        reorders = False
        for seen, _ in enumerate(probe.decode(video=0)):
            reorders = bool(probe.streams.video[0].codec_context.has_b_frames)
            if reorders or seen >= 4:
                break
    if reorders or codec not in ("h264", "hevc", "mpeg2video", "mpeg4"):
        with av.open(source, mode="r") as decoded:
            def pictures() -> Iterator[np.ndarray]:
                for picture in decoded.decode(video=0):
                    check()
                    yield picture.to_ndarray(format="rgb24")

            write_mp4(target, pictures(), fps)
        return
    copied = 0
    with av.open(source, mode="r") as packets, \
            av.open(target, mode="w", format="mp4", options={"movflags": "faststart"}) as out:
        template = packets.streams.video[0]
        stream = out.add_stream_from_template(template)
        stream.time_base = Fraction(1, 1) / rate
        for packet in packets.demux(template):
            if not packet.size:
                continue
            check()
            packet.pts = packet.dts = copied
            packet.time_base = stream.time_base
            packet.stream = stream
            out.mux(packet)
            copied += 1
    if not copied:
        raise ValueError("the video stream holds no frames")
