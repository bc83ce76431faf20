"""The public base URL of a request: the configured one, else the request's own, honouring
``X-Forwarded-Proto/Host/Prefix``. Shared by every HTTP edge, so that FHIR, DICOMweb and the
authorization server write the same absolute links."""

from __future__ import annotations

import re
from collections.abc import Mapping


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
