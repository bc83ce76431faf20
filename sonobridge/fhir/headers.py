"""HTTP header values FHIR gives meaning to: ETags, ``Prefer``, and the request's base URL."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sonobridge.core.errors import FhirError

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')


def parse_etag_version(value: str, header: str = "If-Match") -> int:
    """``W/"3"`` (or ``"3"``, ``3``) -> 3; 400 for anything else."""
    match = _ETAG.match(value)
    if not match:
        raise FhirError(400, "invalid", f'{header}: expected a version ETag such as W/"3"')
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


def base_url(headers: Mapping[str, str], scheme: str, configured: str | None,
             server: tuple[str, int] | None = None) -> str:
    """The public base URL: the configured one, else the request's, honouring X-Forwarded-*.

    Some clients (seen: dicomweb-client over requests) send ``Host`` without the port. With no
    proxy headers the connection came straight to this listener, so its port is added.
    """
    if configured:
        return configured.rstrip("/")
    proto = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scheme
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    host = forwarded or headers.get("host", "")
    if not forwarded and server and host and ":" not in host.rsplit("]", 1)[-1]:
        port = server[1]
        if port and port != {"http": 80, "https": 443}.get(proto):
            host = f"{host}:{port}"
    prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
    if proto not in ("http", "https"):
        proto = scheme
    if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", host or ""):
        host = "localhost"
    if prefix and not re.fullmatch(r"(/[A-Za-z0-9._~\-]+)+", prefix):
        prefix = ""
    return f"{proto}://{host}{prefix}"
