"""Time as the store keeps it: integer microseconds since the Unix epoch, UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime


def now_us() -> int:
    return time.time_ns() // 1000


def to_instant(us: int) -> str:
    """FHIR ``instant`` with microseconds, e.g. ``2026-11-27T15:29:40.123456+00:00``."""
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="microseconds")


def to_http_date(us: int) -> str:
    """RFC 9110 IMF-fixdate for ``Last-Modified`` (whole seconds)."""
    return formatdate(us // 1_000_000, usegmt=True)


def from_http_date(text: str) -> int | None:
    """Parse an HTTP date into microseconds; ``None`` when it is not a valid date."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000


def from_datetime(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000)
