"""An instance checked against one of the guide's profiles, for the guide's own build and tests.

The validator is the core's (``core/profiles``: what the server enforces on write and answers
with ``$validate``); this wrapper gives it the guide's definitions and a profile not held yet,
and returns the problems as text. First the server's structural validation
(``core.validation``), then the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.profiles.registry import ProfileRegistry
from sonobridge.core.validation import validate as validate_structure


def guide_registry(*extra: dict[str, Any]) -> ProfileRegistry:
    """A registry holding the guide's definitions (and ``extra`` ones), no store behind it."""
    from sonobridge.conformance.ig.build import definitions

    registry = ProfileRegistry()
    registry.add(definitions())
    registry.add(extra)
    return registry


def issues(instance: dict[str, Any], profile: dict[str, Any],
           registry: ProfileRegistry | None = None) -> list[Issue]:
    """Structural and profile issues (errors and warnings) of ``instance``."""
    found: list[Issue] = []
    try:
        validate_structure(instance, profile["type"])
    except CoreError as exc:
        found.extend(exc.issues)
    registry = registry or guide_registry(profile)
    found.extend(registry.validate(instance, profile["url"]) or [])
    return found


def check(instance: dict[str, Any], profile: dict[str, Any],
          codes_of: Callable[[str], set[str] | None] | None = None) -> list[str]:
    """The errors of ``instance`` against ``profile`` as text (empty when it conforms).
    ``codes_of`` is accepted for older callers; value sets come from the guide."""
    del codes_of
    return [i.diagnostics for i in issues(instance, profile) if i.severity in ("error", "fatal")]
