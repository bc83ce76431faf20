"""References inside FHIR resources, rewritten: a transaction's ``urn:uuid:`` placeholders by
the ids they were given, a merged patient by the one that survives (HL7 ADT^A40)."""

from __future__ import annotations

from typing import Any


def rewrite_references(value: Any, mapping: dict[str, str]) -> Any:
    """Replace every mapped urn (in references, uri elements and narrative links)."""
    if isinstance(value, dict):
        return {k: rewrite_references(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_references(v, mapping) for v in value]
    if isinstance(value, str):
        if value in mapping:
            return mapping[value]
        if value.startswith("<div") and "urn:" in value:
            for urn, target in mapping.items():
                value = value.replace(f'"{urn}"', f'"{target}"')
        return value
    return value
