"""Date shifting for Retain Longitudinal Temporal Information with Modified Dates: every
date of one patient moves by the same number of days, so intervals (follow-up after 3 months,
gestational age between scans) stay true while the calendar dates do not.

DICOM DA (YYYYMMDD) and DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) and FHIR date/dateTime/instant
(YYYY, YYYY-MM, YYYY-MM-DD, with a time) are shifted here; times of day are kept (a
whole-day shift does not move them). A value that is not a date is replaced by ``None``
(the caller removes it): it cannot be shifted, so it cannot be kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

MIN_DAYS, SPAN_DAYS = 365, 3650
_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT = re.compile(r"^(\d{4,14})(\.\d{1,6})?([+-]\d{4})?$")
_FHIR = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T.*)?$")


def patient_offset_days(key: bytes, patient: str) -> int:
    """The patient's shift: between 1 and 11 years back, from a keyed HMAC of the patient's
    identity (the same key and patient always give the same shift)."""
    digest = hmac.new(key, b"date-shift:" + patient.encode("utf-8"), hashlib.sha256).digest()
    return -(MIN_DAYS + int.from_bytes(digest[:4], "big") % SPAN_DAYS)


def _shift(year: int, month: int, day: int, days: int) -> dt.date:
    return dt.date(year, month, day) + dt.timedelta(days=days)


def shift_da(value: str, days: int) -> str | None:
    match = _DA.match(value.strip())
    if not match:
        return None
    try:
        year, month, day = (int(g) for g in match.groups())
        return _shift(year, month, day, days).strftime("%Y%m%d")
    except ValueError:
        return None


def shift_dt(value: str, days: int) -> str | None:
    """DT: the date part moves; a DT with only a year or a month moves by the same days
    counted from its first day."""
    match = _DT.match(value.strip())
    if not match:
        return None
    digits, fraction, zone = match.groups()
    tail = (fraction or "") + (zone or "")
    date_part, rest = digits[:8], digits[8:] + tail
    if len(date_part) not in (4, 6, 8):
        return None
    shifted = shift_da(date_part + "0101"[len(date_part) - 4:], days)
    if shifted is None:
        return None
    return shifted[:len(date_part)] + rest


def shift_fhir(value: str, days: int) -> str | None:
    """FHIR date, dateTime or instant; precision kept."""
    match = _FHIR.match(value.strip())
    if not match:
        return None
    year, month, day, time = match.groups()
    try:
        moved = _shift(int(year), int(month or 1), int(day or 1), days)
    except ValueError:
        return None
    if day is not None:
        return moved.isoformat() + (time or "")
    if month is not None:
        return moved.strftime("%Y-%m")
    return moved.strftime("%Y")
