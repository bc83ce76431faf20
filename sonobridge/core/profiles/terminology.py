"""The codes of a value set the server holds, for checking required bindings.

A value set is judged only when every part of it can be listed here: an ``expansion``, or a
``compose`` whose includes name whole code systems held by the server (``content`` complete)
or enumerate their concepts, and other value sets it imports. A filter, a code system the
server does not hold, or a fragment is "unknown": the binding is then not checked rather than
checked wrongly (a validator that refuses valid data is worse than one that says less).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# An include of another value set may nest; bound so a cycle or a deep chain cannot loop.
MAX_DEPTH = 8


@dataclass(frozen=True)
class Codes:
    """The (system, code) pairs of a value set, and its bare codes (for ``code`` elements,
    which carry no system)."""

    pairs: frozenset[tuple[str, str]]

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(code for _, code in self.pairs)

    def has(self, system: str | None, code: str) -> bool:
        if system is None:
            return code in self.codes
        return (system, code) in self.pairs


Lookup = Callable[[str], dict[str, Any] | None]


def canonical(url: str) -> str:
    """A canonical without its ``|version`` (one version of each definition is held)."""
    return url.split("|", 1)[0]


def _concepts(concepts: Iterable[Any]) -> Iterable[str]:
    for concept in concepts:
        if isinstance(concept, dict) and isinstance(concept.get("code"), str):
            yield concept["code"]
            yield from _concepts(concept.get("concept", []))


def _contains(entries: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("code"), str) and not entry.get("abstract"):
            yield str(entry.get("system", "")), entry["code"]
        yield from _contains(entry.get("contains", []))


def code_system_codes(cs: dict[str, Any]) -> frozenset[str] | None:
    """Every code of a complete code system (``None`` for a fragment, example or not-present
    one: its codes cannot be listed)."""
    if cs.get("content", "complete") != "complete":
        return None
    return frozenset(_concepts(cs.get("concept", [])))


def expand(value_set: dict[str, Any], lookup: Lookup, depth: int = 0) -> Codes | None:
    """The codes of ``value_set`` (``lookup(canonical)`` gives a held CodeSystem or
    ValueSet), or ``None`` when some part cannot be listed."""
    if depth > MAX_DEPTH:
        return None
    expansion = value_set.get("expansion")
    if isinstance(expansion, dict) and "contains" in expansion:
        return Codes(frozenset(_contains(expansion["contains"])))
    compose = value_set.get("compose")
    if not isinstance(compose, dict):
        return None
    included = _parts(compose.get("include", []), lookup, depth)
    if included is None:
        return None
    excluded = _parts(compose.get("exclude", []), lookup, depth)
    if excluded is None:
        return None
    return Codes(frozenset(included - excluded))


def _parts(parts: Any, lookup: Lookup, depth: int) -> set[tuple[str, str]] | None:
    out: set[tuple[str, str]] = set()
    if not isinstance(parts, list):
        return None
    for part in parts:
        if not isinstance(part, dict) or part.get("filter"):
            return None
        system = part.get("system")
        codes: set[tuple[str, str]] | None = None
        if isinstance(system, str):
            if part.get("concept"):
                codes = {(system, c["code"]) for c in part["concept"]
                         if isinstance(c, dict) and isinstance(c.get("code"), str)}
            else:
                cs = lookup(canonical(system))
                listed = code_system_codes(cs) if cs is not None else None
                if listed is None:
                    return None
                codes = {(system, code) for code in listed}
        for vs_url in part.get("valueSet", []):
            vs = lookup(canonical(vs_url))
            sub = expand(vs, lookup, depth + 1) if vs is not None else None
            if sub is None:
                return None
            codes = set(sub.pairs) if codes is None else codes & set(sub.pairs)
        if codes is not None:
            out |= codes
    return out
