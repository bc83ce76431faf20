"""DICOMweb errors: an HTTP status, a JSON body, and optionally a ``Warning`` header.

The core raises ``CoreError``; this edge raises ``DicomwebError`` (a ``CoreError`` with a
``Warning``) for what only HTTP knows. Both are answered by :func:`body`.
"""

from __future__ import annotations

from sonobridge.core.errors import CoreError

_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
          406: "not-supported", 409: "conflict", 413: "too-costly", 415: "not-supported",
          501: "not-supported", 502: "transient", 503: "transient"}


class DicomwebError(CoreError):
    def __init__(self, status: int, message: str, *, warning: str | None = None) -> None:
        super().__init__(status, _CODES.get(status, "exception"), message)
        self.warning = warning

    def body(self) -> dict[str, object]:
        return body(self)


def body(exc: CoreError) -> dict[str, object]:
    return {"status": exc.status, "error": _REASONS.get(exc.status, "error"),
            "message": exc.message}


def warning_of(exc: CoreError) -> str | None:
    return exc.warning if isinstance(exc, DicomwebError) else None


_REASONS = {400: "bad_request", 403: "forbidden", 404: "not_found", 406: "not_acceptable",
            409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
            500: "processing_failure", 501: "not_implemented", 502: "bad_gateway",
            503: "unavailable"}


def bad_request(message: str) -> DicomwebError:
    return DicomwebError(400, message)


def not_found(message: str) -> DicomwebError:
    return DicomwebError(404, message)


def not_acceptable(message: str) -> DicomwebError:
    return DicomwebError(406, message)
