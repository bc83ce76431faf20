"""FHIR date, dateTime and instant values as half-open time ranges, by their precision.

``2024`` is the whole year, ``2024-03-01T10:00Z`` the whole minute. History (``_since``,
``_at``) and date search both compare ranges, so both use this.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from sonobridge.core.errors import CoreError

_DATE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})"
    r"(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$")


def parse_period(value: str, name: str, *, require_tz: bool = True) -> tuple[int, int]:
    """A FHIR date/dateTime/instant -> [start, end) in microseconds since the epoch (UTC).

    A time without a zone is refused when ``require_tz`` (FHIR requires one when a time is
    given); otherwise it is read as UTC.
    """
    match = _DATE.match(value.strip())
    if not match:
        raise CoreError(400, "invalid", f"{name}: {value!r} is not a FHIR date or dateTime",
                        expression=[name])
    g = match.groupdict()
    if g["H"] is not None and g["tz"] is None and require_tz:
        raise CoreError(400, "invalid", f"{name}: a time needs a time zone", expression=[name])
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6])))
    try:
        year = int(g["y"])
        if g["m"] is None:
            start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        elif g["d"] is None:
            month = int(g["m"])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
        elif g["H"] is None:
            start = datetime(year, int(g["m"]), int(g["d"]), tzinfo=UTC)
            end = start + timedelta(days=1)
        else:
            fraction = g["f"] or ""
            micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
            start = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]),
                             int(g["S"] or 0), micro, tzinfo=tz)
            if fraction:
                step = timedelta(microseconds=10 ** max(0, 6 - (len(fraction) - 1)))
            else:
                step = timedelta(seconds=1 if g["S"] else 60)
            end = start + step
    except (ValueError, OverflowError) as exc:  # 9999-12-31T23:59:59Z has no end in Python
        raise CoreError(400, "invalid", f"{name}: {value!r}: {exc}", expression=[name]) from None
    return _us(start), _us(end)


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
