"""What the core refuses, in a form every edge can translate.

A ``CoreError`` carries an HTTP-style status (the one vocabulary all the edges share: 400 bad
input, 403 not allowed, 404 not here, 406 cannot be given in that form, 409/412 conflicts, 413
too much, 422 not processable) and the FHIR ``OperationOutcome`` issues that say why (FHIR's
error model is the richest of the protocols spoken here, and the core's resources are FHIR
resources). The FHIR edge sends the outcome as it is; DICOMweb sends its JSON error with the
status; DIMSE and HL7 v2 choose their status or ACK code from ``status`` and ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Issue:
    """One ``OperationOutcome.issue``."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code,
                               "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = self.expression
        return out


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def info_outcome(message: str, code: str = "informational") -> dict[str, Any]:
    return operation_outcome([Issue(code, message, severity="information")])


class CoreError(Exception):
    """Raised by the core (and by the edges for their own protocol errors); each edge turns
    it into its protocol's answer."""

    def __init__(self, status: int, code: str, diagnostics: str, *,
                 expression: list[str] | None = None, issues: list[Issue] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.issues = issues or [Issue(code, diagnostics, expression=expression or [])]
        self.headers = headers or {}

    @property
    def message(self) -> str:
        return str(self)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def bad_request(message: str, expression: list[str] | None = None) -> CoreError:
    return CoreError(400, "invalid", message, expression=expression)


def not_found(message: str) -> CoreError:
    return CoreError(404, "not-found", message)


def not_acceptable(message: str) -> CoreError:
    """The thing exists, but not in the form asked for (a transfer syntax, a media type)."""
    return CoreError(406, "not-supported", message)


def too_costly(message: str) -> CoreError:
    """The request would need more work than the limits allow (``core/limits.py``)."""
    return CoreError(413, "too-costly", message)
