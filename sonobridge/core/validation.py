"""Validation of incoming resources against the R4 structure, using ``fhir.resources`` (R4B models).

R4B is wire-compatible with R4 for the resources this gateway deals in. Eighteen R4 types have no
R4B model (the MedicinalProduct family, the Substance* detail types, EffectEvidenceSynthesis,
RiskEvidenceSynthesis); those get the Resource-level checks only, and the CapabilityStatement says
so. Validation builds a model only to check the input: what is stored is the input itself.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any

from pydantic import ValidationError

from sonobridge.core.definitions import resource_types
from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.narrative import check_narrative
from sonobridge.core.schema import XHTML, TypeInfo, type_info

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_EMPTY = object()


@cache
def model_class(res_type: str) -> Any | None:
    """The R4B model class for a type, or ``None`` for the R4 types R4B lacks."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(res_type)
    except ValueError:
        return None


@cache
def has_model(res_type: str) -> bool:
    """Whether R4B has a model for the type, without importing the model (that is slow)."""
    from fhir.resources.R4B import fhirtypes

    return hasattr(fhirtypes, f"{res_type}Type")


@cache
def known_types() -> frozenset[str]:
    return frozenset(resource_types())


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def check_type(res_type: str) -> None:
    if res_type not in known_types():
        raise CoreError(404, "not-supported", f"unknown resource type {res_type!r}")


def validate(resource: Any, expected_type: str | None = None, *, status: int = 400) -> str:
    """Check that ``resource`` is a valid R4 resource; returns its type or raises ``CoreError``.

    ``status`` is 400 for a received body and 422 for the result of a patch.
    """
    if not isinstance(resource, dict):
        raise CoreError(400, "structure",
                        "the body is not a FHIR resource (expected a JSON object)")
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        raise CoreError(400, "structure", "the resource has no resourceType",
                        expression=["resourceType"])
    if res_type not in known_types():
        raise CoreError(400, "not-supported", f"unknown resource type {res_type!r}",
                        expression=["resourceType"])
    if expected_type is not None and res_type != expected_type:
        raise CoreError(400, "invalid",
                        f"resourceType {res_type!r} does not match the URL's {expected_type!r}",
                        expression=["resourceType"])
    res_id = resource.get("id")
    if res_id is not None and (not isinstance(res_id, str) or not is_valid_id(res_id)):
        raise CoreError(400, "value", "id must match [A-Za-z0-9-.]{1,64}",
                        expression=[f"{res_type}.id"])
    issues = _empty_elements(resource, res_type)
    model = model_class(res_type)
    if model is not None:
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            issues.extend(_issues(exc, res_type))
        except (ValueError, TypeError) as exc:  # validators that raise outside pydantic's wrapper
            issues.append(Issue("invalid", str(exc), expression=[res_type]))
        if not issues:
            _check_content(resource, type_info(model), res_type, issues)
    if issues:
        raise CoreError(status, "invalid", issues[0].diagnostics, issues=issues)
    return res_type


def _issues(exc: ValidationError, res_type: str) -> list[Issue]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        path = fhirpath_of(res_type, error.get("loc", ()))
        message = error.get("msg", "invalid value")
        kind = error.get("type", "")
        code = "structure" if kind in ("extra_forbidden",) else "value"
        if kind == "extra_forbidden":
            message = f"unknown element {path.rsplit('.', 1)[-1]!r}"
        elif "missing" in kind:
            code = "required"
        out.append(Issue(code, f"{path}: {message}", expression=[path]))
    return out


def fhirpath_of(res_type: str, loc: tuple[Any, ...]) -> str:
    """('name', 0, 'given') -> 'Patient.name[0].given' (pydantic's location as FHIRPath)."""
    path = res_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif (isinstance(part, str) and part and not part.endswith("Type") and part[0].islower()) \
                or (isinstance(part, str) and part.startswith("_")):
            path += f".{part}"
    return path


def _empty_elements(resource: dict[str, Any], res_type: str) -> list[Issue]:
    """FHIR forbids empty objects, arrays and strings, and null outside primitive arrays."""
    issues: list[Issue] = []

    def walk(value: Any, path: str, in_array: bool = False) -> None:
        if value is None:
            if not in_array:
                issues.append(Issue("structure", f"{path}: null is not allowed here",
                                    expression=[path]))
        elif isinstance(value, dict):
            if not value:
                issues.append(Issue("structure", f"{path}: empty object", expression=[path]))
            for key, item in value.items():
                if key != "div":
                    walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            if not value:
                issues.append(Issue("structure", f"{path}: empty array", expression=[path]))
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]", in_array=True)
        elif isinstance(value, str):
            if value == "" or (value.strip() == "" and value != value.strip(" ")):
                issues.append(Issue("value", f"{path}: empty string", expression=[path]))
        elif isinstance(value, float | Decimal) and not Decimal(str(value)).is_finite():
            issues.append(Issue("value", f"{path}: not a finite number", expression=[path]))

    for key, item in resource.items():
        walk(item, f"{res_type}.{key}")
    return issues


def _check_content(obj: dict[str, Any], info: TypeInfo, path: str, issues: list[Issue]) -> None:
    """What the models leave out: codes of required bindings, and narrative that must be XHTML."""
    for name, value in obj.items():
        spec = info.elements.get(name)
        if spec is None:
            continue
        where = f"{path}.{name}"
        items = value if isinstance(value, list) else [value]
        if spec.kind == "primitive":
            if spec.codes is not None:
                for i, code in enumerate(items):
                    if code is not None and code not in spec.codes:
                        at = f"{where}[{i}]" if spec.is_list else where
                        issues.append(Issue("code-invalid",
                                            f"{at}: {code!r} is not one of "
                                            f"{', '.join(sorted(spec.codes))}", expression=[at]))
            elif spec.json_type == XHTML and isinstance(value, str):
                check_narrative(value, where, issues)
        elif spec.kind == "complex":
            sub = type_info(spec.model)
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    _check_content(item, sub, f"{where}[{i}]" if spec.is_list else where, issues)
        else:
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                inner = model_class(item.get("resourceType", ""))
                if inner is not None:
                    _check_content(item, type_info(inner),
                                   f"{where}[{i}]" if spec.is_list else where, issues)
