"""HTTP Range (RFC 9110 §14) on a Binary read in its native form: a browser's video player
seeks in a course's recorded session (an MP4 held as a FHIR Binary) by asking for byte ranges.

One range is served (206 with Content-Range); several ranges in one request are answered with
the whole content (200), which RFC 9110 allows, rather than a multipart/byteranges body no
video player asks for. ``If-Range`` naming another version than the current ETag gets the
whole content too, so a player never splices two versions. A range starting past the end is
416 with ``Content-Range: bytes */size``.
"""

from __future__ import annotations

from sonobridge.core.errors import CoreError


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte asked for by a ``Range`` header, or ``None`` to serve
    the whole content (no header, another unit, several ranges, a malformed one: RFC 9110 says
    an invalid Range is ignored). 416 when the range cannot be satisfied."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text + last_text).isdigit() or len(first_text + last_text) > 18:
        return None
    if first_text:
        first = int(first_text)
        if first >= size:
            raise unsatisfiable(size)
        last = int(last_text) if last_text else size - 1
        if last < first:
            return None
    else:
        suffix = int(last_text)
        if suffix == 0:
            raise unsatisfiable(size)
        first, last = max(size - suffix, 0), size - 1
    if first >= size:
        raise unsatisfiable(size)
    return first, min(last, size - 1)


def unsatisfiable(size: int) -> CoreError:
    return CoreError(416, "invalid", f"the range asked for lies outside the {size} bytes",
                     headers={"Content-Range": f"bytes */{size}"})


def ranged(range_header: str | None, if_range: str | None, headers: dict[str, str],
           content: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and bytes of a native Binary read under ``Range``."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    if if_range is not None and if_range.strip() != headers.get("ETag", ""):
        return 200, headers, content
    found = byte_range(range_header, len(content))
    if found is None:
        return 200, headers, content
    first, last = found
    headers["Content-Range"] = f"bytes {first}-{last}/{len(content)}"
    return 206, headers, content[first:last + 1]
