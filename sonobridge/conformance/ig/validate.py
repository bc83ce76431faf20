"""An instance checked against one of the guide's profiles.

First the server's own validation on write (``core.validation.validate``: the R4 structure,
primitive formats, required bindings of the base); then each constraint of the profile's
snapshot that the guide uses: cardinality, choice types, ``pattern[x]``/``fixed[x]``,
reference targets, and required bindings to the guide's own value sets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sonobridge.core.errors import CoreError
from sonobridge.core.validation import validate as validate_structure


def _values(node: Any, parts: list[str]) -> list[Any]:
    """The values at a dotted path under ``node`` (lists flattened, choices resolved)."""
    if not parts:
        return [node]
    if isinstance(node, list):
        return [v for item in node for v in _values(item, parts)]
    if not isinstance(node, dict):
        return []
    name, rest = parts[0], parts[1:]
    if name.endswith("[x]"):
        stem = name[:-3]
        found = [node[k] for k in node if k.startswith(stem) and len(k) > len(stem)
                 and k[len(stem)].isupper()]
    else:
        found = [node[name]] if name in node else []
    out: list[Any] = []
    for value in found:
        if isinstance(value, list):
            for item in value:
                out.extend(_values(item, rest))
        else:
            out.extend(_values(value, rest))
    return out


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present in the value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_contains(i, p) for i in items) for p in pattern)
    return bool(value == pattern)


def _choice_type(key: str, stem: str) -> str:
    suffix = key[len(stem):]
    primitive = suffix[0].lower() + suffix[1:]
    return primitive if primitive in {"string", "boolean", "integer", "dateTime", "date",
                                      "time", "period", "decimal", "uri"} else suffix


def check(instance: dict[str, Any], profile: dict[str, Any],
          codes_of: Callable[[str], set[str] | None]) -> list[str]:
    """The problems of ``instance`` against ``profile`` (empty when it conforms).
    ``codes_of(valueset_url)`` gives a value set's codes when the guide defines it."""
    problems: list[str] = []
    try:
        validate_structure(instance, profile["type"])
    except CoreError as exc:
        problems.append(f"structure: {exc}")
    diff_ids = {e["id"] for e in profile["differential"]["element"]}
    for element in profile["snapshot"]["element"]:
        path: str = element["path"]
        parts = path.split(".")[1:]
        if not parts:
            continue
        parent_parts, last = parts[:-1], parts[-1]
        for parent in _values(instance, parent_parts):
            problems.extend(_check_element(parent, last, element, path, codes_of,
                                           element["id"] in diff_ids))
    return problems


def _check_element(parent: Any, last: str, element: dict[str, Any], path: str,
                   codes_of: Callable[[str], set[str] | None], constrained: bool) -> list[str]:
    problems: list[str] = []
    values = _values(parent, [last])
    min_, max_ = element.get("min", 0), element.get("max", "*")
    if len(values) < min_:
        problems.append(f"{path}: at least {min_} required, {len(values)} present")
    if max_ != "*" and len(values) > int(max_):
        problems.append(f"{path}: at most {max_} allowed, {len(values)} present")
    if not values or not constrained:
        return problems
    if last.endswith("[x]") and isinstance(parent, dict):
        stem = last[:-3]
        allowed = {t["code"] for t in element.get("type", [])}
        for key in parent:
            if key.startswith(stem) and len(key) > len(stem) and key[len(stem)].isupper() \
                    and _choice_type(key, stem) not in allowed:
                problems.append(f"{path}: type {key[len(stem):]} not allowed "
                                f"({', '.join(sorted(allowed))})")
    for key, pattern in element.items():
        if key.startswith("pattern") and not any(_contains(v, pattern) for v in values):
            problems.append(f"{path}: does not match the pattern {pattern!r}")
        if key.startswith("fixed") and any(v != pattern for v in values):
            problems.append(f"{path}: must be exactly {pattern!r}")
    targets = [p.rsplit("/", 1)[-1] for t in element.get("type", [])
               for p in t.get("targetProfile", [])]
    is_reference = element.get("type", [{}])[0].get("code") == "Reference"
    if targets and "Resource" not in targets and is_reference:
        for value in values:
            ref = value.get("reference", "") if isinstance(value, dict) else ""
            if ref and "/" in ref and ref.split("/")[-2] not in targets:
                problems.append(f"{path}: reference {ref} is not to {' or '.join(targets)}")
    binding = element.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet"):
        codes = codes_of(binding["valueSet"])
        if codes is not None:
            for value in values:
                found = [c.get("code") for c in value.get("coding", [])] \
                    if isinstance(value, dict) else [value]
                if not any(c in codes for c in found):
                    problems.append(f"{path}: none of {found} is in {binding['valueSet']}")
    return problems
