"""An independent oracle for search tests: fhirpathpy evaluates the parameter's expression, and
plain Python turns the values into query strings and decides what must match.

It shares no code with the server's extraction (which uses compiled extractors), so a wrong
extractor or a wrong SQL condition shows up as a disagreement.
"""

from __future__ import annotations

import re
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.models import models

_RESOLVE = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)")


def oracle_values(expression: str, resource: dict[str, Any]) -> list[Any]:
    """The values of a search parameter expression, by fhirpathpy (``resolve()`` rewritten)."""
    expr = _RESOLVE.sub(lambda m: f".where(reference.matches('(^|/){m.group(1)}/'))", expression)
    # FHIRPath's as() wants a single item; servers (and R4's own multi-valued expressions such as
    # Observation.component.value.as(CodeableConcept)) mean ofType().
    expr = expr.replace(".as(", ".ofType(")
    expr = re.sub(r"\(([^()]+?) as ([A-Za-z]+)\)", r"(\1.ofType(\2))", expr)
    branches = [b.strip() for b in _split_union(expr)]
    res_type = resource["resourceType"]
    kept = []
    for branch in branches:
        head = branch.lstrip("(").split(".")[0].split(" ")[0]
        if head in ("Resource", "DomainResource"):  # fhirpathpy wants the concrete type
            branch = branch.replace(head, res_type, 1)
            head = res_type
        if head == res_type:
            kept.append(branch)
    if not kept:
        return []
    try:
        return [v for v in evaluate(resource, " | ".join(kept), {}, models["r4"]) if v is not None]
    except Exception:
        return []


def _split_union(expr: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(expr):
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            parts.append(expr[start:i])
            start = i + 1
    parts.append(expr[start:])
    return parts


def esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def query_value(param_type: str, value: Any) -> str | None:
    """A search value that must match the resource holding ``value``."""
    if param_type == "token":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return esc(value)
        if isinstance(value, dict):
            for coding in value.get("coding") or []:
                if coding.get("code"):
                    system = coding.get("system")
                    return f"{esc(system)}|{esc(coding['code'])}" if system else esc(coding["code"])
            if "value" in value and isinstance(value["value"], str):
                system = value.get("system")
                if system and "type" not in value and "use" not in value and \
                        value.get("system") not in ("phone", "email", "fax", "url", "sms",
                                                    "pager", "other"):
                    return f"{esc(system)}|{esc(value['value'])}"
                return esc(value["value"])
            if value.get("code"):
                system = value.get("system")
                return f"{esc(system)}|{esc(value['code'])}" if system else esc(value["code"])
        return None
    if param_type == "string":
        texts = _strings(value)
        return esc(texts[0][:4]) if texts else None
    if param_type == "reference":
        if isinstance(value, str):
            return esc(value.split("|")[0])
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and not ref.startswith("#"):
                return esc(ref)
        return None
    if param_type == "date":
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            if value.get("start"):
                return f"ge{value['start']}"
            if value.get("end"):
                return f"le{value['end']}"
            if value.get("event"):
                return value["event"][0]
        return None
    if param_type == "number":
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else None
    if param_type == "quantity":
        if isinstance(value, dict) and isinstance(value.get("value"), int | float):
            number = value["value"]
            if value.get("system") and value.get("code"):
                return f"{number}|{esc(value['system'])}|{esc(value['code'])}"
            return str(number)
        return None
    if param_type == "uri":
        return esc(value) if isinstance(value, str) else None
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        out = []
        for key in ("family", "given", "text", "line", "city", "state", "country", "postalCode",
                    "name", "value", "display"):
            item = value.get(key)
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                out += [i for i in item if isinstance(i, str)]
        return [o for o in out if o.strip()]
    return []


def is_searchable(param_type: str, value: Any) -> bool:
    """Whether a value gives the resource an index entry (so it is not :missing)."""
    if param_type == "reference":
        return isinstance(value, str) or (isinstance(value, dict) and (
            (isinstance(value.get("reference"), str) and not value["reference"].startswith("#"))
            or isinstance(value.get("identifier"), dict)))
    if param_type == "token":
        if isinstance(value, bool | str):
            return True
        if isinstance(value, dict):
            return bool(value.get("code") or value.get("value") or value.get("text")
                        or any(c.get("code") or c.get("display")
                               for c in value.get("coding") or []))
        return False
    if param_type == "string":
        return bool(_strings(value))
    if param_type in ("number",):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if param_type == "quantity":
        return isinstance(value, dict) and ("value" in value or "low" in value or "high" in value)
    if param_type == "date":
        return isinstance(value, str) or (isinstance(value, dict) and bool(
            value.get("start") or value.get("end") or value.get("event")
            or (value.get("repeat") or {}).get("boundsPeriod")))
    return isinstance(value, str)
