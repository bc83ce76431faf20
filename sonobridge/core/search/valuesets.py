"""The concepts of a locally stored ValueSet, for ``:in`` and ``:not-in``.

Covers what can be known without a terminology server: an expansion, explicitly listed
concepts, and whole code systems (``include.system`` alone). Filters need a terminology server.
"""

from __future__ import annotations

from typing import Any

from sonobridge.core.errors import CoreError


def expand(valueset: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    expansion = valueset.get("expansion")
    if expansion:
        out: list[tuple[str | None, str | None]] = []
        _contains(expansion.get("contains") or [], out)
        return out
    compose = valueset.get("compose") or {}
    excluded = {(c.get("system"), concept.get("code"))
                for c in compose.get("exclude") or [] for concept in c.get("concept") or []}
    out = []
    for include in compose.get("include") or []:
        if include.get("filter") or include.get("valueSet"):
            raise CoreError(400, "not-supported",
                            "this ValueSet uses filters or other value sets, which need a "
                            "terminology service")
        system = include.get("system")
        concepts = include.get("concept")
        if concepts:
            out += [(system, c.get("code")) for c in concepts
                    if (system, c.get("code")) not in excluded]
        elif system:
            out.append((system, None))
    return out


def _contains(items: list[dict[str, Any]], out: list[tuple[str | None, str | None]]) -> None:
    for item in items:
        if item.get("code"):
            out.append((item.get("system"), item["code"]))
        _contains(item.get("contains") or [], out)
