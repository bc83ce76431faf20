"""Index rows from typed nodes: what each search parameter type stores for each FHIR data type.

Rows are dicts for the ``idx_*`` tables (without ``rid``/``res_type``, which the writer adds).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sonobridge.core.errors import CoreError
from sonobridge.core.search.dates import parse_period
from sonobridge.core.search.fhirpath import Node
from sonobridge.store.normalize import MAX_INDEXED, normalize

DATE_MIN = -(2**62)
DATE_MAX = 2**62
_STRINGY = {"string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid",
            "?", "date", "dateTime", "instant", "time"}


def _clip(text: str) -> str:
    return text[:MAX_INDEXED]


# ------------------------------------------------------------------------------------ string

def string_values(node: Node) -> list[str]:
    value, kind = node.value, node.fhir_type
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    keys: tuple[str, ...]
    if kind == "HumanName":
        keys = ("family", "given", "prefix", "suffix", "text")
    elif kind == "Address":
        keys = ("line", "city", "district", "state", "postalCode", "country", "text")
    else:
        keys = tuple(k for k, v in value.items() if isinstance(v, str | list) and k != "id")
    out: list[str] = []
    for key in keys:
        item = value.get(key)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(i for i in item if isinstance(i, str))
    return out


def string_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for node in nodes:
        for text in string_values(node):
            norm = _clip(normalize(text))
            key = (norm, text)
            if norm and key not in seen:
                seen.add(key)
                rows.append({"param": param, "value": norm, "exact": _clip(text)})
    return rows


# ------------------------------------------------------------------------------------- token

def token_tuples(node: Node) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, display text) triples for a node."""
    value, kind = node.value, node.fhir_type
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(None, value, None)]
    if not isinstance(value, dict):
        return []
    if kind == "CodeableConcept" or (kind == "?" and ("coding" in value or "text" in value)):
        out = []
        for coding in value.get("coding") or []:
            out.extend(token_tuples(Node(coding, "Coding", None)))
        if isinstance(value.get("text"), str):
            out.append((None, None, value["text"]))
        return out
    if kind == "Identifier":
        return [(value.get("system"), value.get("value"), (value.get("type") or {}).get("text"))]
    if kind == "ContactPoint":
        return [(value.get("system"), value.get("value"), None)]
    if "code" in value or "system" in value:  # Coding, and Quantity used as a token
        return [(value.get("system"), value.get("code"), value.get("display"))]
    if "value" in value and isinstance(value["value"], str):
        return [(value.get("system"), value["value"], None)]
    return []


def token_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    """One row per distinct (system, code, text). A text alone (``CodeableConcept.text``) is
    left out when a coding's display already gives that text: ``:text`` matches it there,
    and a row without a code plays no part in any other match or sort (an SR Observation's
    concepts carry their meaning in both: a third of its token rows)."""
    rows, seen = [], set()
    for node in nodes:
        for system, code, text in token_tuples(node):
            if code is None and text is None:
                continue
            row = (_opt(system), _opt(code), _clip(normalize(text)) if text else None)
            if row not in seen:
                seen.add(row)
                rows.append({"param": param, "system": row[0], "code": row[1], "text": row[2]})
        if node.fhir_type == "Identifier" and isinstance(node.value, dict):
            for coding in (node.value.get("type") or {}).get("coding") or []:
                key = f"{coding.get('system', '')}|{coding.get('code', '')}|" \
                      f"{node.value.get('value', '')}"
                rows.append({"param": f"{param}:of-type", "system": None, "code": _clip(key),
                             "text": None})
    if len(rows) > 1:
        coded = {row["text"] for row in rows if row["code"] is not None and row["text"]}
        if coded:
            rows = [row for row in rows if row["code"] is not None or row["system"] is not None
                    or row["text"] not in coded]
    return rows


def _opt(text: Any) -> str | None:
    return _clip(text) if isinstance(text, str) and text else None


# --------------------------------------------------------------------------------- reference

def parse_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """`Type/id` -> (Type, id, None); absolute URL -> (Type, id, url); urn -> (None, None, urn)."""
    if ref.startswith(("urn:", "#")):
        return None, None, ref
    url = ref if "://" in ref else None
    path = ref.split("?")[0].split("|")[0]
    parts = [p for p in path.split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1], url
    return None, None, url or ref


def reference_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    rows = []
    for node in nodes:
        value = node.value
        target_type = target_id = url = ident_system = ident_value = None
        if isinstance(value, str):  # canonical or uri: Questionnaire/x or http://…/x|1.0
            target_type, target_id, url = parse_reference(value.split("|")[0])
        elif isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str):
                if ref.startswith("#"):
                    continue
                target_type, target_id, url = parse_reference(ref)
            identifier = value.get("identifier")
            if isinstance(identifier, dict):
                ident_system, ident_value = identifier.get("system"), identifier.get("value")
        else:
            continue
        if target_id is None and url is None and ident_value is None:
            continue
        rows.append({"param": param, "target_type": target_type,
                     "target_id": _opt(target_id), "url": url[:512] if url else None,
                     "ident_system": _opt(ident_system), "ident_value": _opt(ident_value)})
    return rows


# -------------------------------------------------------------------------------------- date

def date_range(node: Node) -> list[tuple[int, int]]:
    value, kind = node.value, node.fhir_type
    try:
        if isinstance(value, str):
            return [parse_period(value, "date", require_tz=False)]
        if not isinstance(value, dict):
            return []
        if kind == "Period" or "start" in value or "end" in value:
            start = parse_period(value["start"], "start", require_tz=False)[0] \
                if "start" in value else DATE_MIN
            end = parse_period(value["end"], "end", require_tz=False)[1] \
                if "end" in value else DATE_MAX
            return [(start, end)]
        if kind == "Timing" or "event" in value or "repeat" in value:
            out = [parse_period(e, "event", require_tz=False) for e in value.get("event") or []]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if bounds:
                out.extend(date_range(Node(bounds, "Period", None)))
            return out
    except CoreError:
        return []
    return []


def date_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    return [{"param": param, "low": low, "high": high}
            for node in nodes for low, high in date_range(node)]


# ---------------------------------------------------------------------------- number/quantity

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None


def number_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    rows = []
    for node in nodes:
        number = _number(node.value)
        if number is None and isinstance(node.value, dict):
            number = _number(node.value.get("value"))
        if number is not None:
            rows.append({"param": param, "value": number})
    return rows


def quantity_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    rows = []
    for node in nodes:
        value = node.value
        if not isinstance(value, dict):
            continue
        if node.fhir_type == "Range" or "low" in value or "high" in value:
            low, high = value.get("low") or {}, value.get("high") or {}
            unit_from = low or high
            rows.append({"param": param, "system": _opt(unit_from.get("system")),
                         "code": _opt(unit_from.get("code")),
                         "unit": _opt(unit_from.get("unit")), "value": None,
                         "low": _number(low.get("value")), "high": _number(high.get("value"))})
            continue
        if node.fhir_type == "SampledData":  # a series, not a quantity: nothing to compare
            continue
        number = _number(value.get("value"))
        if number is None:
            continue
        code = value.get("code") or value.get("currency")
        rows.append({"param": param, "system": _opt(value.get("system")), "code": _opt(code),
                     "unit": _opt(value.get("unit")), "value": number, "low": number,
                     "high": number})
    return rows


# --------------------------------------------------------------------------------------- uri

def uri_rows(param: str, nodes: list[Node]) -> list[dict[str, Any]]:
    return [{"param": param, "uri": node.value[:512]} for node in nodes
            if isinstance(node.value, str) and node.fhir_type in _STRINGY | {"?"}]


ROW_BUILDERS = {"string": string_rows, "token": token_rows, "reference": reference_rows,
                "date": date_rows, "number": number_rows, "quantity": quantity_rows,
                "uri": uri_rows}
TABLE_FOR = {"string": "idx_string", "token": "idx_token", "reference": "idx_reference",
             "date": "idx_date", "number": "idx_number", "quantity": "idx_quantity",
             "uri": "idx_uri"}
