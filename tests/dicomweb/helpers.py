"""Helpers for DICOMweb tests: multipart bodies in and out."""

from __future__ import annotations

import re
from typing import Any

from tests.dicom_data import to_bytes

BOUNDARY = "test-boundary-42"


def multipart(parts: list[bytes], content_type: str = "application/dicom",
              boundary: str = BOUNDARY) -> bytes:
    out = []
    for part in parts:
        out.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        out.append(part)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def stow(client: Any, datasets: list[Any], study: str | None = None, quoted: bool = True,
         raw: list[bytes] | None = None) -> Any:
    body = multipart(raw if raw is not None else [to_bytes(ds) for ds in datasets])
    kind = '"application/dicom"' if quoted else "application/dicom"
    path = f"/dicomweb/studies/{study}" if study else "/dicomweb/studies"
    return client.post(path, content=body, headers={
        "Content-Type": f"multipart/related; type={kind}; boundary={BOUNDARY}",
        "Accept": "application/dicom+json"})


def parts(response: Any) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related response into (raw headers, body) pairs (RFC 2046)."""
    content_type = response.headers["content-type"]
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, content_type
    delimiter = b"--" + match.group(1).encode()
    body = response.content
    assert body.endswith(delimiter + b"--\r\n"), body[-80:]
    out = []
    for chunk in body.split(delimiter)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        out.append((headers, payload))
    return out


def uids(ds: Any) -> tuple[str, str, str]:
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def instance_url(ds: Any) -> str:
    study, series, sop = uids(ds)
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
