"""Every request's work, bounded: how many pixels one frame may have, how many decoded bytes a
request may hold, how many frames a rendered video may have, how long decoding may take, and
how many frames one URL may ask for. One place, so that a limit is raised or lowered once and
holds for every protocol (DICOMweb, WADO-URI, DIMSE).

Geometry is checked against what the data really holds: the header inside a JPEG, JPEG-LS or
JPEG 2000 codestream, not only the DICOM attributes (a 1 KB object can declare a 30000 x 30000
frame). A ``Budget`` carries one request's allowance; the work checks it between frames and
stops when the client has gone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sonobridge.config import Settings
from sonobridge.core.errors import CoreError


@dataclass(frozen=True)
class Limits:
    frame_pixels: int = 8192 * 8192  # rows x columns of one frame
    decoded_bytes: int = 2_000_000_000  # decoded pixel bytes one request may hold at once
    video_frames: int = 3600  # frames of one rendered video (two minutes at 30 fps)
    decode_seconds: float = 120.0  # decoding and encoding time of one request
    frame_list: int = 1000  # frame numbers in one URL (frames/1,2,3…)
    # pixels decoded for one rendered video, frame by frame (1,800 frames of 1280 x 1080)
    video_pixels: int = 2_500_000_000

    def frame(self, rows: int, columns: int, samples: int = 1, bits: int = 8,
              what: str = "a frame") -> int:
        """The decoded size of one frame in bytes; 413 when it is beyond the limits (or its
        geometry is not a geometry)."""
        if rows <= 0 or columns <= 0 or samples <= 0 or bits <= 0:
            raise CoreError(422, "processing", f"{what} has no usable geometry "
                            f"({rows} x {columns}, {samples} samples of {bits} bits)")
        if rows * columns > self.frame_pixels:
            raise too_costly(f"{what} is {columns} x {rows} pixels; this server decodes at "
                             f"most {self.frame_pixels:,} pixels per frame")
        size = rows * columns * samples * ((bits + 7) // 8)
        if size > self.decoded_bytes:
            raise too_costly(f"{what} decodes to {size:,} bytes, more than the "
                             f"{self.decoded_bytes:,} a request may hold")
        return size

    def held(self, frame_bytes: int, frames: int, what: str = "the rendering") -> None:
        """413 unless ``frames`` decoded frames of ``frame_bytes`` each fit the budget."""
        if frames > self.video_frames:
            raise too_costly(f"{what} would have {frames:,} frames; at most "
                             f"{self.video_frames:,} are rendered")
        if frame_bytes * frames > self.decoded_bytes:
            raise too_costly(f"{what} needs {frame_bytes * frames:,} decoded bytes at once, "
                             f"more than the {self.decoded_bytes:,} a request may hold")

    def streamed(self, frame_pixels: int, frames: int, what: str = "the rendering") -> None:
        """413 unless a video of ``frames`` frames, decoded one at a time, stays within the
        frame count and the pixels a rendered video may decode (its time is the budget's)."""
        if frames > self.video_frames:
            raise too_costly(f"{what} would have {frames:,} frames; at most "
                             f"{self.video_frames:,} are rendered")
        if frame_pixels * frames > self.video_pixels:
            raise too_costly(f"{what} would decode {frame_pixels * frames:,} pixels; at most "
                             f"{self.video_pixels:,} are decoded for one video")

    def frame_numbers(self, count: int) -> None:
        if count > self.frame_list:
            raise CoreError(400, "too-costly", f"{count} frame numbers in one request; at "
                            f"most {self.frame_list} (ask in several requests)")

    def budget(self) -> Budget:
        return Budget(time.monotonic() + self.decode_seconds, self.decode_seconds)


def limits_of(settings: Settings) -> Limits:
    """The limits the settings ask for (``SONOBRIDGE_LIMIT_*``)."""
    return Limits(settings.limit_frame_pixels, settings.limit_decoded_bytes,
                  settings.limit_video_frames, float(settings.limit_decode_seconds),
                  settings.limit_frame_list, settings.limit_video_pixels)


def too_costly(message: str) -> CoreError:
    return CoreError(413, "too-costly", message)


@dataclass
class Budget:
    """One request's allowance of time; ``cancel`` (the client went away) stops the work at
    its next ``check``."""

    deadline: float
    seconds: float
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise CoreError(499, "exception", "the client went away: the work was stopped")
        if time.monotonic() > self.deadline:
            raise CoreError(503, "too-costly", f"the work took more than {self.seconds:g} s "
                            "and was stopped")


UNLIMITED_BUDGET_SECONDS = 10 ** 9


def unlimited() -> Budget:
    """For work no client waits on (commands, queues)."""
    return Budget(time.monotonic() + UNLIMITED_BUDGET_SECONDS, UNLIMITED_BUDGET_SECONDS)
