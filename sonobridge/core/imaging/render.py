"""Rendered images and cine videos (PS3.18 8.3.5, 9.x /rendered and /thumbnail).

Pixels become 8-bit display values (window from the request, else from the object, else the
range of the data; palette colour through its LUT; MONOCHROME1 inverted), then JPEG or PNG
(Pillow), an animated GIF, or an H.264 MP4 (PyAV) at the cine's own frame rate.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
CINE_TYPES = ("video/mp4", "image/gif")


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


def to_display(array: np.ndarray, metadata: dict[str, Any],
               window: tuple[float, float] | None = None,
               palette: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """8-bit greyscale (rows, cols) or RGB (rows, cols, 3) display values."""
    photometric = str(_value(metadata, "00280004", "MONOCHROME2"))
    if photometric == "PALETTE COLOR" and palette is not None:
        array = palette(array)
    if array.ndim == 3:
        if array.dtype == np.uint8:
            return array
        top = float(array.max()) or 1.0
        return np.clip(array / top * 255, 0, 255).astype(np.uint8)
    values = array.astype(np.float32)
    slope = float(_value(metadata, "00281053", 1) or 1)
    intercept = float(_value(metadata, "00281052", 0) or 0)
    values = values * slope + intercept
    if window is None:
        center, width = _value(metadata, "00281050"), _value(metadata, "00281051")
        if center is not None and width is not None:
            window = (float(center), float(width))
    if window is not None:
        center, width = window
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(values.min()), float(values.max())
    scaled: np.ndarray = np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


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


def encode_gif(frames: Sequence[np.ndarray], fps: float,
               viewport: tuple[int, int] | None = None) -> bytes:
    images = [_image(f, viewport).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(round(1000 / fps), 20))
    return out.getvalue()


def encode_mp4(frames: Sequence[np.ndarray], fps: float,
               viewport: tuple[int, int] | None = None) -> bytes:
    """H.264 in MP4 (yuv420p, even dimensions), playable in every browser."""

    first = _image(frames[0], viewport)
    width, height = first.size[0] - first.size[0] % 2, first.size[1] - first.size[1] % 2
    # faststart (index first, so playback starts before the end arrives) rewrites the file:
    # FFmpeg needs a real file for that, not a memory buffer.
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "cine.mp4")
        _write_mp4(target, frames, fps, viewport, width, height)
        with open(target, "rb") as f:
            return f.read()


def _write_mp4(target: str, frames: Sequence[np.ndarray], fps: float,
               viewport: tuple[int, int] | None, width: int, height: int) -> None:
    import av

    with av.open(target, mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for display in frames:
            image = _image(display, viewport).convert("RGB").crop((0, 0, width, height))
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_to_mp4(stream_bytes: bytes, fps: float) -> bytes:
    """A DICOM video (an H.264/HEVC/MPEG-2 elementary stream) as MP4.

    Elementary streams carry no timestamps. Without frame reordering (no B-frames) the
    packets are copied as they are, numbered at the cine's frame rate: no re-encoding, no
    quality loss. With reordering the presentation order cannot be known without decoding, so
    the frames are decoded and encoded again.
    """
    import av

    rate = Fraction(fps).limit_denominator(1000)
    with av.open(io.BytesIO(stream_bytes), mode="r") as source:
        video = source.streams.video[0]
        packets = [p for p in source.demux(video) if p.size]
    with av.open(io.BytesIO(stream_bytes), mode="r") as source:
        decoded = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
        reorders = source.streams.video[0].codec_context.has_b_frames
    if not packets or not decoded:
        raise ValueError("the video stream holds no frames")
    if reorders or len(decoded) != len(packets) or video.codec_context.name not in (
            "h264", "hevc", "mpeg2video", "mpeg4"):
        return encode_mp4(decoded, fps)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "video.mp4")
        with av.open(io.BytesIO(stream_bytes), mode="r") as source, \
                av.open(out, mode="w", format="mp4", options={"movflags": "faststart"}) as target:
            template = source.streams.video[0]
            stream = target.add_stream_from_template(template)
            stream.time_base = Fraction(1, 1) / rate
            for index, packet in enumerate(p for p in source.demux(template) if p.size):
                packet.pts = packet.dts = index
                packet.time_base = stream.time_base
                packet.stream = stream
                target.mux(packet)
        with open(out, "rb") as f:
            return f.read()
