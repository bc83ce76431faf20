"""HTTP header values FHIR gives meaning to: ETags and ``Prefer``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sonobridge.core.errors import CoreError

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')


def parse_etag_version(value: str, header: str = "If-Match") -> int:
    """``W/"3"`` (or ``"3"``, ``3``) -> 3; 400 for anything else."""
    match = _ETAG.match(value)
    if not match:
        raise CoreError(400, "invalid", f'{header}: expected a version ETag such as W/"3"')
    return int(match.group(1))


def etag_matches(header: str, version: int) -> bool:
    """For ``If-None-Match``: does any listed ETag (or ``*``) match this version?"""
    for part in header.split(","):
        part = part.strip()
        if part == "*":
            return True
        match = _ETAG.match(part)
        if match and int(match.group(1)) == version:
            return True
    return False


def prefer(headers: Mapping[str, str]) -> dict[str, str]:
    """Parse ``Prefer: return=minimal, handling=strict`` into a dict."""
    out: dict[str, str] = {}
    for part in headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.lower()] = value.strip().strip('"').lower()
    return out
