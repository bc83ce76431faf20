"""FHIR errors: one exception carrying an HTTP status and the OperationOutcome to send."""

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


class FhirError(Exception):
    """Raised anywhere in the FHIR layer; the edge turns it into a response."""

    def __init__(self, status: int, code: str, diagnostics: str, *,
                 expression: list[str] | None = None, issues: list[Issue] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue(code, diagnostics, expression=expression or [])]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def bad_request(message: str, expression: list[str] | None = None) -> FhirError:
    return FhirError(400, "invalid", message, expression=expression)


def not_found(message: str) -> FhirError:
    return FhirError(404, "not-found", message)
