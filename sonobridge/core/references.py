"""References inside FHIR resources, rewritten: a transaction's ``urn:uuid:`` placeholders by
the ids they were given, a merged patient by the one that survives (HL7 ADT^A40)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_LITERAL = re.compile(r"^(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/"
                      r"(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


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


def _reference_values(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            else:
                yield from _reference_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _reference_values(item)


def literal_references(resource: Any, base: str) -> set[tuple[str, str]]:
    """(type, id) of every literal reference to a resource on this server (relative, or
    absolute under ``base``): what a write makes the resource point at."""
    found: set[tuple[str, str]] = set()
    for text in _reference_values(resource):
        match = _LITERAL.match(text)
        if match is None:
            continue
        if match.group("base") and match.group("base").rstrip("/") != base.rstrip("/"):
            continue  # another server's resource
        found.add((match.group("type"), match.group("id")))
    return found
