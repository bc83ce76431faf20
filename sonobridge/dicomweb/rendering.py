"""What a ``/rendered`` or ``/thumbnail`` request asks for: the media type (``Accept`` or the
``accept`` query parameter), the viewport, the window and the JPEG quality (PS3.18 8.3.5).
The rendering itself is the core's (``core/imaging/render.py``)."""

from __future__ import annotations

import math

from sonobridge.core.imaging.render import CINE_TYPES, Window
from sonobridge.dicomweb.accept import parse_accept
from sonobridge.dicomweb.errors import DicomwebError

WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def choose(accept: str | None, *, multiframe: bool, query_accept: str | None = None) -> str:
    """The media type of a rendering; 406 when none of the client's is one we make."""
    offers = (*CINE_TYPES, "image/jpeg", "image/png") if multiframe else \
        ("image/jpeg", "image/png", "image/gif")
    wanted = parse_accept(query_accept or accept)
    if not wanted:
        return offers[0] if not multiframe else "image/jpeg"
    for media_range in wanted:
        for offer in offers:
            if media_range.matches(offer):
                return offer
    raise DicomwebError(406, f"cannot render as any of {query_accept or accept!r}; this "
                        f"server renders {', '.join(offers)}")


def parse_viewport(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        width, height = int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except ValueError:
        raise DicomwebError(400, "viewport is vw,vh (pixels)") from None
    if width <= 0 or width > 8192 or height < 0 or height > 8192:
        raise DicomwebError(400, "viewport must be between 1 and 8192 pixels")
    return width, height or width


def parse_window(value: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.3): the function is linear (the default),
    linear-exact or sigmoid, as VOI LUT Function names them (PS3.3 C.11.2.1.3)."""
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise DicomwebError(400, "window is center,width[,function]") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise DicomwebError(400, "window center and width must be finite numbers")
    if width <= 0:
        raise DicomwebError(400, "window width must be positive")
    name = parts[2].strip().lower() if len(parts) > 2 else "linear"
    if len(parts) > 3 or name not in WINDOW_FUNCTIONS:
        raise DicomwebError(400, "the window function is linear, linear-exact or sigmoid")
    return center, width, WINDOW_FUNCTIONS[name]


def parse_quality(value: str | None) -> int:
    if not value:
        return 90
    if not value.isdecimal() or not 1 <= int(value) <= 100:
        raise DicomwebError(400, "quality is an integer from 1 to 100")
    return int(value)
