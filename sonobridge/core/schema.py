"""What each element of each R4 type is, read once from the ``fhir.resources`` R4B models.

The models know the order of elements, their cardinality, their types and the complete code lists
of required bindings. The XML converter, code validation and ``_summary`` need exactly that, and
no library exposes it in a usable form, so this module turns the models' field annotations into a
small table per type.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

# JSON representation of each primitive kind.
BOOLEAN, INTEGER, DECIMAL, STRING, XHTML = "boolean", "integer", "decimal", "string", "xhtml"


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a type, under its JSON name (a choice is one Element per variant)."""

    name: str
    is_list: bool
    kind: str  # "primitive" | "complex" | "resource"
    json_type: str  # for primitives: boolean, integer, decimal, string, xhtml; else ""
    fhir_type: str  # dateTime, code, CodeableConcept, Reference… (backbones: their model name)
    model: Any  # the model class for complex elements
    codes: frozenset[str] | None  # complete code list of a required binding
    summary: bool
    required: bool


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    elements: dict[str, Element]  # JSON name -> Element, in definition order

    def element(self, name: str) -> Element | None:
        return self.elements.get(name)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional/Union-with-None and List; returns (inner annotation, is_list)."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, is_list


def _fhir_primitive_name(annotation: Any, json_type: str) -> str:
    """``Annotated[str, DateTime()]`` -> ``dateTime``; bare ``bool`` -> ``boolean``."""
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            name = type(meta).__name__
            if name == "UuidVersion":
                return "uuid"
            if name and name[0].isupper():
                return name[0].lower() + name[1:]
    return {BOOLEAN: "boolean", INTEGER: "integer", DECIMAL: "decimal"}.get(json_type, "string")


def _primitive_json_type(annotation: Any) -> str | None:
    """The JSON kind of a primitive annotation, or ``None`` for a complex type."""
    base = annotation
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        if any(type(m).__name__ == "Xhtml" for m in meta):
            return XHTML
    elif hasattr(annotation, "get_model_klass"):
        return None
    if base is bool:
        return BOOLEAN
    if base is int:
        return INTEGER
    if base is Decimal or base is float:
        return DECIMAL
    return STRING


# Elements whose generated model lists codes taken from the element's short text, not from a
# closed binding: CapabilityStatement.format is "xml | json | ttl | mime type" (any MIME type,
# BCP-13), which the models read as the closed list formats/json/ttl/mime.
_NOT_CLOSED = frozenset({("CapabilityStatement", "format")})


@cache
def type_info(model: Any) -> TypeInfo:
    """The element table of a model class (resource, data type or backbone element)."""
    by_alias = {}
    for field_name, field in model.model_fields.items():
        by_alias[field.alias or field_name] = field
    elements: dict[str, Element] = {}
    for name in model.elements_sequence():
        field = by_alias.get(name) or model.model_fields.get(name)
        if field is None:
            continue
        extra = field.json_schema_extra or {}
        if not extra.get("element_property"):
            continue
        inner, is_list = _unwrap(field.annotation)
        json_type = _primitive_json_type(inner)
        codes = extra.get("enum_values")
        code_set = frozenset(codes) if codes and "+" not in codes and \
            (model.__name__, name) not in _NOT_CLOSED else None
        if json_type is not None:
            kind, sub = "primitive", None
            fhir_type = _fhir_primitive_name(inner, json_type)
        elif getattr(inner, "__name__", "") == "ResourceType":
            kind, sub, json_type, fhir_type = "resource", None, "", "Resource"
        else:
            kind, sub, json_type = "complex", inner.get_model_klass(), ""
            fhir_type = sub.__name__
        elements[name] = Element(name, is_list, kind, json_type, fhir_type, sub, code_set,
                                 bool(extra.get("summary_element_property")),
                                 bool(extra.get("element_required")) or field.is_required())
    return TypeInfo(model.__name__, elements)


@cache
def resource_info(res_type: str) -> TypeInfo | None:
    from sonobridge.core.validation import model_class

    model = model_class(res_type)
    return None if model is None else type_info(model)


def choice_variants(info: TypeInfo, base: str) -> list[str]:
    """JSON names of the variants of choice element ``base`` (``value`` -> ``valueQuantity``…)."""
    return [n for n in info.elements if n.startswith(base) and len(n) > len(base)
            and n[len(base)].isupper() and base not in info.elements]
