"""DICOMweb errors: an HTTP status, a JSON body, and optionally a ``Warning`` header."""

from __future__ import annotations


class DicomwebError(Exception):
    def __init__(self, status: int, message: str, *, warning: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.warning = warning

    def body(self) -> dict[str, object]:
        return {"status": self.status, "error": _REASONS.get(self.status, "error"),
                "message": self.message}


_REASONS = {400: "bad_request", 404: "not_found", 406: "not_acceptable", 409: "conflict",
            413: "payload_too_large", 415: "unsupported_media_type",
            500: "processing_failure", 501: "not_implemented", 503: "unavailable"}


def bad_request(message: str) -> DicomwebError:
    return DicomwebError(400, message)


def not_found(message: str) -> DicomwebError:
    return DicomwebError(404, message)


def not_acceptable(message: str) -> DicomwebError:
    return DicomwebError(406, message)
