"""What a CDA check found wrong: one ``Problem`` per broken rule, with where it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """``rule``: ``CDA-XML`` (not well-formed or unsafe), ``CDA-XSD`` (the CDA R2 schema with
    the WS/T 500 overlay) or a WS/T 500 rule id (``WST500.6-H03``…); ``line`` in the
    document as received; ``path`` an XPath to the element when one is known."""

    rule: str
    message: str
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        at = f" ({self.path})" if self.path else ""
        return f"{self.rule} {where}{self.message}{at}"


class CdaError(ValueError):
    """A document that cannot be used: not XML, unsafe, not the expected kind, or failing
    the schema or the WS/T 500 rules. ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems[:5]))
        self.problems = problems


class MappingError(ValueError):
    """FHIR content a document cannot be made from; ``expression`` names the FHIR element."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression
