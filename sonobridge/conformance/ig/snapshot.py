"""Snapshots for the guide's profiles, generated from the base R4 definitions the server knows.

The package ships no base StructureDefinitions; the element tables of the R4 resources come from
the structure models the validator uses (``core.schema``: element order, cardinality, types,
reference targets, summary flags, short text). The base snapshot of a resource lists its elements
and the elements of its backbone elements, as the R4 core snapshots do (data types are not
expanded); a profile's snapshot is that list with the differential's constraints laid over it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from sonobridge.core.schema import type_info
from sonobridge.core.validation import model_class

HL7_SD = "http://hl7.org/fhir/StructureDefinition/"
# The R4 primitive types' element names whose FHIR type code differs from the model's.
_SYSTEM_STRING = "http://hl7.org/fhirpath/System.String"


def _is_backbone(model: Any) -> bool:
    from fhir.resources.R4B.backboneelement import BackboneElement

    return isinstance(model, type) and issubclass(model, BackboneElement)


def _short(text: str | None) -> str:
    if not text:
        return ""
    return text.split(". ")[0].strip().rstrip(".")[:120]


def _elements(model: Any, path: str, out: list[dict[str, Any]]) -> None:
    info = type_info(model)
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    seen_choices: dict[str, dict[str, Any]] = {}
    for name, element in info.elements.items():
        field = fields.get(name)
        extra = (field.json_schema_extra if field is not None else None) or {}
        choice = extra.get("one_of_many")
        backbone = element.kind == "complex" and _is_backbone(element.model)
        code = "BackboneElement" if backbone else element.fhir_type
        if element.kind == "primitive" and name == "id" and path.count(".") > 0:
            code = _SYSTEM_STRING
        if name == "id" and path.count(".") == 0:
            code = "id"
        type_entry: dict[str, Any] = {"code": code}
        targets = extra.get("enum_reference_types")
        if code == "Reference" and targets and targets != ["Resource"]:
            type_entry["targetProfile"] = [HL7_SD + t for t in targets]
        if choice:
            existing = seen_choices.get(choice)
            if existing is not None:
                existing["type"].append(type_entry)
                continue
            name = f"{choice}[x]"
        min_ = 1 if (extra.get("element_required") or extra.get("one_of_many_required")) else 0
        max_ = "*" if element.is_list else "1"
        full = f"{path}.{name}"
        entry: dict[str, Any] = {
            "id": full, "path": full,
            "short": _short(field.title if field is not None else None),
            "definition": (field.description if field is not None else None) or name,
            "min": min_, "max": max_,
            "base": {"path": full, "min": min_, "max": max_},
            "type": [type_entry],
            "isModifier": name in ("modifierExtension", "implicitRules")
            or (name == "status" and "." not in path),
            "isSummary": element.summary,
        }
        codes = extra.get("enum_values")
        if codes:
            listed = [c for c in codes if c != "+"]
            entry["binding"] = {
                "strength": "extensible" if "+" in codes else "required",
                "description": "one of: " + ", ".join(listed)}
        out.append(entry)
        if choice:
            seen_choices[choice] = entry
        if backbone:
            _elements(element.model, full, out)


@cache
def _base(res_type: str) -> tuple[dict[str, Any], ...]:
    model = model_class(res_type)
    if model is None:
        raise ValueError(f"no structure model for {res_type}")
    root = {"id": res_type, "path": res_type, "short": res_type,
            "definition": f"{res_type} (FHIR R4 base resource)", "min": 0, "max": "*",
            "base": {"path": res_type, "min": 0, "max": "*"}, "isModifier": False,
            "isSummary": False}
    out: list[dict[str, Any]] = [root]
    _elements(model, res_type, out)
    return tuple(out)


def base_snapshot(res_type: str) -> list[dict[str, Any]]:
    """The element list of an R4 resource type (a fresh copy)."""
    return copy.deepcopy(list(_base(res_type)))


CONSTRAINT_KEYS = ("short", "definition", "comment", "min", "max", "type", "mustSupport",
                   "binding", "fixed", "pattern", "constraint")


def apply_differential(res_type: str, differential: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    """The snapshot of a profile on ``res_type`` whose differential is ``differential``.
    Every differential element names an element of the base, or a slice of one (``sliceName``,
    id ``Path:name``): a slice starts as a copy of its base element, placed after the base
    element's children and earlier slices, as the R4 snapshots order them. Constraints
    (``constraint``) add to the base's; every other property replaces the base's."""
    snapshot = base_snapshot(res_type)
    by_id = {e["id"]: e for e in snapshot}
    for diff in differential:
        target = by_id.get(diff["id"])
        if target is None and diff.get("sliceName"):
            target = _new_slice(snapshot, by_id, diff)
        if target is None:
            raise ValueError(f"differential element {diff['id']} is not in the base {res_type}")
        for key, value in diff.items():
            if key in ("id", "path"):
                continue
            if key == "type" and target.get("type"):
                target["type"] = _narrow_types(target["type"], value)
            elif key == "constraint":
                target["constraint"] = [*target.get("constraint", []), *copy.deepcopy(value)]
            else:
                target[key] = copy.deepcopy(value)
    return snapshot


def _new_slice(snapshot: list[dict[str, Any]], by_id: dict[str, dict[str, Any]],
               diff: dict[str, Any]) -> dict[str, Any] | None:
    base_id, _, name = diff["id"].rpartition(":")
    base = by_id.get(base_id)
    if base is None or name != diff["sliceName"] or not base.get("slicing"):
        return None  # a slice needs its base element, sliced before it
    element = copy.deepcopy(base)
    element.pop("slicing", None)
    element.update({"id": diff["id"], "sliceName": name})
    last = max(i for i, e in enumerate(snapshot)
               if e["id"] == base_id or e["id"].startswith((base_id + ".", base_id + ":")))
    snapshot.insert(last + 1, element)
    by_id[diff["id"]] = element
    return element


def _narrow_types(base: list[dict[str, Any]], wanted: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    codes = {t["code"] for t in base}
    for entry in wanted:
        if entry["code"] not in codes:
            raise ValueError(f"type {entry['code']} is not allowed by the base ({sorted(codes)})")
    return copy.deepcopy(wanted)
