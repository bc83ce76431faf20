"""DICOM attribute matching for Modality Worklist keys (PS3.4 C.2.2.2 and K.2.2.1), on values
already taken out of the query: single value, universal, wildcard, range, combined date-time
range and list of UIDs.

Two rules of the worklist annex shape every function here: an empty (universal) key matches
everything, and an entity with an unknown (empty) value fails to match any non-universal key
except a lone ``*``. Person names may be matched regardless of case (C.2.2.2.1); everything
else is case-sensitive. Only ``*`` and ``?`` are wildcards: ``[`` and other ``fnmatch``
specials are literal characters in DICOM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache


class MatchError(ValueError):
    """A matching key cannot be understood (e.g. a date range that is no range)."""


def is_universal(wanted: str) -> bool:
    return wanted == "" or wanted == "*"


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


@lru_cache(maxsize=512)
def _pattern(wanted: str, fold: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))


def text(wanted: str, actual: str, *, fold: bool = False) -> bool:
    """Single value or wildcard matching of one value."""
    if is_universal(wanted):
        return True
    if actual == "":
        return False
    if has_wildcard(wanted):
        return _pattern(wanted, fold).fullmatch(actual) is not None
    return actual.casefold() == wanted.casefold() if fold else actual == wanted


def any_value(wanted: str, actual: Iterable[str], *, fold: bool = False) -> bool:
    """A key against a multi-valued attribute (e.g. Scheduled Station AE Title, VM 1-n)."""
    if is_universal(wanted):
        return True
    return any(text(wanted, value, fold=fold) for value in actual)


def uid_list(wanted: list[str], actual: str) -> bool:
    """List of UID matching (C.2.2.2.2): any of the UIDs."""
    wanted = [w for w in wanted if w]
    return not wanted or actual in wanted


def person_name(wanted: str, actual: str) -> bool:
    """Person names, case-insensitive. A key without ``=`` is matched against the whole value
    and against each component group (alphabetic, ideographic, phonetic), so that ``王*``
    finds ``Wang^Wei=王^伟``; a key with ``=`` is matched group by group."""
    wanted, actual = _trim_pn(wanted), _trim_pn(actual)
    if is_universal(wanted):
        return True
    groups = actual.split("=")
    if "=" not in wanted:
        return text(wanted, actual, fold=True) or any(
            text(wanted, group, fold=True) for group in groups)
    for index, group in enumerate(wanted.split("=")):
        if group and not text(group, groups[index] if index < len(groups) else "", fold=True):
            return False
    return True


def _trim_pn(value: str) -> str:
    """``Doe^Jane^^^`` and ``Doe^Jane`` are the same name; so are trailing empty groups."""
    groups = [g.rstrip("^ ") for g in value.split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return "=".join(groups)


# ------------------------------------------------------------------------ dates and times

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _range(wanted: str) -> tuple[str, str, bool]:
    """(low, high, is_range) of ``a-b``, ``-b``, ``a-`` or a single value."""
    low, dash, high = wanted.partition("-")
    return low.strip(), high.strip(), bool(dash)


def _date(value: str) -> str:
    try:
        if not _DATE.match(value):
            raise ValueError
        datetime.strptime(value, "%Y%m%d")  # a real day: not 20251340
    except ValueError:
        raise MatchError(f"not a DICOM date: {value!r}") from None
    return value


def _time(value: str, *, upper: bool) -> str:
    """A TM key as a 13-character comparable ``HHMMSS.FFFFFF``: an upper bound covers all of
    its precision (``14`` is up to 14:59:59.999999), a lower bound starts at its beginning."""
    value = value.replace(":", "")
    whole, _, fraction = value.partition(".")
    if not _TIME.match(value) or any(int(whole[i:i + 2]) > limit for i, limit in
                                     ((0, 23), (2, 59), (4, 60)) if len(whole) > i):
        raise MatchError(f"not a DICOM time: {value!r}")
    filler = "5959"[: 6 - len(whole)] if upper else "0000"[: 6 - len(whole)]
    whole = (whole + filler)[:6]
    fraction = fraction.ljust(6, "9" if upper else "0")
    return f"{whole}.{fraction}"


def normal_time(value: str) -> str:
    """A stored TM value in the same comparable form (missing parts are zero)."""
    return _time(value, upper=False) if value else ""


def date_bounds(wanted: str) -> tuple[str, str]:
    """(lowest, highest) date a DA key admits, '' for an open end."""
    low, high, is_range = _range(wanted)
    if not is_range:
        return _date(low), _date(low)
    if not low and not high:
        raise MatchError(f"not a date range: {wanted!r}")
    return (_date(low) if low else ""), (_date(high) if high else "")


def time_bounds(wanted: str) -> tuple[str, str]:
    low, high, is_range = _range(wanted)
    if not is_range:
        return _time(low, upper=False), _time(low, upper=True)
    if not low and not high:
        raise MatchError(f"not a time range: {wanted!r}")
    return (_time(low, upper=False) if low else ""), (_time(high, upper=True) if high else "")


def _within(value: str, low: str, high: str) -> bool:
    return (not low or value >= low) and (not high or value <= high)


def date(wanted: str, actual: str) -> bool:
    if is_universal(wanted):
        return True
    if not actual:
        return False
    return _within(actual, *date_bounds(wanted))


def time(wanted: str, actual: str) -> bool:
    """Within a day: a range never crosses midnight (C.2.2.2.5.2)."""
    if is_universal(wanted):
        return True
    if not actual:
        return False
    return _within(normal_time(actual), *time_bounds(wanted))


def combined(date_key: str, time_key: str) -> bool:
    """Whether a date key and a time key are matched as one date-time range: when both are
    ranges. C.2.2.2.5 describes this combined matching (``20250101-20250102`` with
    ``1000-1400`` is 1 Jan 10:00 to 2 Jan 14:00, not 10:00-14:00 on each day); for
    composite queries it needs extended negotiation, while the worklist's Scheduled Procedure
    Step Start Date and Time have always been matched as a pair (the rationale of CP-601)."""
    return "-" in date_key and "-" in time_key


def date_time(date_key: str, time_key: str, actual_date: str, actual_time: str) -> bool:
    """Match a date key and a time key against a date and a time, combined when both are
    ranges, each on its own otherwise."""
    if not combined(date_key, time_key):
        return date(date_key, actual_date) and time(time_key, actual_time)
    if not actual_date:
        return False
    d_low, d_high = date_bounds(date_key)
    t_low, t_high = time_bounds(time_key)
    low = f"{d_low}{t_low or '000000.000000'}" if d_low else ""
    high = f"{d_high}{t_high or '235959.999999'}" if d_high else ""
    moment = actual_date + (normal_time(actual_time) or "000000.000000")
    return _within(moment, low, high)
