"""Cleaning free text (action C on descriptors, SR TEXT items, FHIR narrative): what a
patient is known by is taken out of text that otherwise stays readable.

No library does this for DICOM and FHIR alike (``deid`` recipes replace whole values,
``dicognito`` replaces values it recognises by VR), so it is written here: the identifying
strings are the ones this object itself holds (name parts, IDs, accession number, birth
date), and every date-like token, since a free-text date cannot be shifted reliably.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 2  # one-letter initials would blank every such letter in the text
# 2024-05-01, 2024/05/01, 2024.05.01, 20240501, 01.05.2024, 01/05/2024, 2024年5月1日
_DATES = re.compile(
    r"(?<!\d)(?:(?:19|20)\d{2}[-/.年]?(?:0?[1-9]|1[0-2])[-/.月]?(?:0?[1-9]|[12]\d|3[01])日?"
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)\d{2})(?!\d)")


def identifying_strings(names: Iterable[str], identifiers: Iterable[str],
                        dates: Iterable[str] = ()) -> tuple[str, ...]:
    """The strings to take out of text: each person name whole and by part (DICOM ``^`` and
    ``=`` groups, spaces), each identifier, and each date in the forms people write it."""
    found: set[str] = set()
    for name in names:
        text = name.strip()
        if not text:
            continue
        found.add(text)
        for part in re.split(r"[\^=\s,]+", text):
            if len(part) >= MIN_LENGTH:
                found.add(part)
        parts = [p for p in re.split(r"[\^=]+", text) if p]
        if len(parts) >= 2:
            found.add(f"{parts[1]} {parts[0]}")
            found.add(f"{parts[0]} {parts[1]}")
            found.add(f"{parts[0]}, {parts[1]}")
    for identifier in identifiers:
        text = identifier.strip()
        if len(text) >= MIN_LENGTH:
            found.add(text)
    for date in dates:
        digits = re.sub(r"\D", "", date)[:8]
        if len(digits) == 8:
            y, m, d = digits[:4], digits[4:6], digits[6:]
            found.update({digits, f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}.{m}.{d}",
                          f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"})
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def _pattern(value: str) -> str:
    """A string as a whole word where it begins or ends with a Latin letter or digit (the
    surname "Li" must not blank "Linear"); CJK names have no word boundary to ask for."""
    escaped = re.escape(value)
    if value[:1].isascii() and value[:1].isalnum():
        escaped = r"(?<![A-Za-z0-9])" + escaped
    if value[-1:].isascii() and value[-1:].isalnum():
        escaped += r"(?![A-Za-z0-9])"
    return escaped


def scrub(text: str, identifying: Iterable[str], *, dates: bool = True) -> str:
    """``text`` with every identifying string (case-insensitive, longest first) and, with
    ``dates``, every date-like token replaced by ``***``."""
    strings = sorted({s for s in identifying if s}, key=lambda s: (-len(s), s))
    if strings:
        pattern = re.compile("|".join(_pattern(s) for s in strings), re.IGNORECASE)
        text = pattern.sub(MASK, text)
    return _DATES.sub(MASK, text) if dates else text


def contains(text: str, identifying: Iterable[str]) -> bool:
    """Whether ``text`` still holds one of the identifying strings (as ``scrub`` finds them)."""
    return scrub(text, identifying, dates=False) != text
