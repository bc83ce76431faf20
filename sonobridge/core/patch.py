"""PATCH: JSON Patch (RFC 6902, via ``jsonpatch``) and FHIRPath Patch (a ``Parameters`` body).

FHIRPath Patch needs to find *where* an element lives, not just its value, which FHIRPath
engines (fhirpathpy included) do not offer. ``PathLocator`` walks the subset of FHIRPath that
patch paths use: navigation, choice elements, ``[n]``, ``first()``, ``last()``, ``where(...)``
(its criterion evaluated by fhirpathpy) and ``extension('url')``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonpatch
from fhirpathpy import evaluate as fhirpath_evaluate

from sonobridge.core.errors import CoreError
from sonobridge.core.schema import Element, TypeInfo, resource_info, type_info


def apply_json_patch(resource: dict[str, Any], operations: object) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise CoreError(400, "structure", "a JSON Patch document is a JSON array of operations")
    try:
        patched: dict[str, Any] = jsonpatch.JsonPatch(operations).apply(resource, in_place=False)
        return patched
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
        raise CoreError(422, "processing", f"JSON Patch cannot be applied: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            KeyError, AttributeError) as exc:
        raise CoreError(400, "invalid", f"invalid JSON Patch: {exc}") from None


# ----------------------------------------------------------------------------- FHIRPath Patch

@dataclass
class Location:
    """Where a value lives: ``container[key]``, with the element's definition when known."""

    container: Any
    key: Any
    spec: Element | None
    parent: Location | None

    @property
    def value(self) -> Any:
        return self.container[self.key]

    def info(self) -> TypeInfo | None:
        value = self.value
        if self.spec is None:
            if isinstance(value, dict) and "resourceType" in value:
                return resource_info(value["resourceType"])
            return None
        if self.spec.kind == "complex":
            return type_info(self.spec.model)
        if self.spec.kind == "resource" and isinstance(value, dict):
            return resource_info(value.get("resourceType", ""))
        return None


def _split_steps(path: str) -> list[str]:
    """Split a path at top-level dots (not inside quotes or parentheses)."""
    steps, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(path):
        if quote:
            if char == quote and path[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            steps.append(path[start:i])
            start = i + 1
    steps.append(path[start:])
    if depth or quote or any(not s.strip() for s in steps):
        raise CoreError(400, "invalid", f"cannot parse FHIRPath patch path {path!r}")
    return [s.strip() for s in steps]


class PathLocator:
    def __init__(self, resource: dict[str, Any]) -> None:
        self.root_holder = {"root": resource}
        self.resource = resource

    def locate(self, path: str) -> list[Location]:
        steps = _split_steps(path)
        current = [Location(self.root_holder, "root", None, None)]
        if steps and steps[0] == self.resource.get("resourceType"):
            steps = steps[1:]
        for step in steps:
            current = self._step(current, step, path)
        return current

    def _step(self, current: list[Location], step: str, path: str) -> list[Location]:
        index = None
        if step.endswith("]") and "[" in step and not step.startswith("where("):
            step, _, tail = step.partition("[")
            try:
                index = int(tail[:-1])
            except ValueError:
                raise CoreError(400, "invalid", f"bad indexer in {path!r}") from None
        if step == "first()":
            result = current[:1]
        elif step == "last()":
            result = current[-1:]
        elif step.startswith("where(") and step.endswith(")"):
            criterion = step[len("where("):-1]
            result = [loc for loc in current if _truthy(loc.value, criterion, path)]
        elif step.startswith("extension(") and step.endswith(")"):
            url = step[len("extension("):-1].strip().strip("'\"")
            result = [loc for loc in self._children(current, "extension")
                      if isinstance(loc.value, dict) and loc.value.get("url") == url]
        elif step.replace("_", "").isalnum():
            result = self._children(current, step)
        else:
            raise CoreError(400, "not-supported",
                            f"FHIRPath patch path step {step!r} is not supported")
        if index is not None:
            result = result[index:index + 1] if 0 <= index < len(result) else []
        return result

    def _children(self, current: list[Location], name: str) -> list[Location]:
        out: list[Location] = []
        for loc in current:
            value = loc.value
            if not isinstance(value, dict):
                continue
            info = loc.info()
            key, spec = _resolve_name(value, info, name)
            if key is None or key not in value:
                continue
            child = value[key]
            if isinstance(child, list):
                out.extend(Location(child, i, spec, loc) for i in range(len(child)))
            else:
                out.append(Location(value, key, spec, loc))
        return out


def _resolve_name(obj: dict[str, Any], info: TypeInfo | None, name: str
                  ) -> tuple[str | None, Element | None]:
    """Map a FHIRPath name to the JSON key present (``value`` -> ``valueQuantity``)."""
    if info is not None and name in info.elements:
        return name, info.elements[name]
    if name in obj:
        return name, None
    for key in obj:
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return key, info.elements.get(key) if info else None
    return None, None


def _truthy(value: Any, criterion: str, path: str) -> bool:
    try:
        result = fhirpath_evaluate(value, criterion)
    except Exception as exc:  # fhirpathpy raises many kinds for a bad expression
        raise CoreError(400, "invalid", f"cannot evaluate where({criterion}) in {path!r}: {exc}"
                        ) from None
    return result == [True]


def _part_value(part: dict[str, Any], where: str) -> Any:
    """The value of a ``value`` part: a ``value[x]``, or an object built from nested parts."""
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5 and key[5].isupper():
            return value
    if "resource" in part:
        return part["resource"]
    if "part" in part:
        out: dict[str, Any] = {}
        for sub in part["part"]:
            name = sub.get("name")
            if not name:
                raise CoreError(400, "invalid", f"{where}: nested value parts need a name")
            value = _part_value(sub, where)
            if name in out:
                out[name] = out[name] if isinstance(out[name], list) else [out[name]]
                out[name].append(value)
            else:
                out[name] = value
        return out
    raise CoreError(400, "required", f"{where}: the operation has no value")


def _value_key(part: dict[str, Any]) -> str | None:
    for key in part:
        if key.startswith("value") and len(key) > 5 and key[5].isupper():
            return key[5:]
    return None


def apply_fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """Apply a FHIRPath Patch ``Parameters`` resource; returns the patched copy."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise CoreError(400, "structure", "a FHIRPath Patch body is a Parameters resource")
    result = copy.deepcopy(resource)
    locator = PathLocator(result)
    for n, param in enumerate(parameters.get("parameter") or []):
        where = f"Parameters.parameter[{n}]"
        if param.get("name") != "operation":
            raise CoreError(400, "invalid", f"{where}: expected a parameter named 'operation'",
                            expression=[where])
        parts: dict[str, dict[str, Any]] = {}
        for part in param.get("part") or []:
            parts[part.get("name", "")] = part
        op = (parts.get("type") or {}).get("valueCode")
        path = (parts.get("path") or {}).get("valueString")
        if not op or not path:
            raise CoreError(400, "required", f"{where}: an operation needs a type and a path",
                            expression=[where])
        _apply_one(locator, op, path, parts, where)
        locator.resource = result
    return result


def _apply_one(locator: PathLocator, op: str, path: str, parts: dict[str, dict[str, Any]],
               where: str) -> None:
    if op == "add":
        name = (parts.get("name") or {}).get("valueString")
        if not name or "value" not in parts:
            raise CoreError(400, "required", f"{where}: add needs a name and a value")
        targets = _one(locator.locate(path), path, where, allow_none=False)
        container = targets.value
        if not isinstance(container, dict):
            raise CoreError(422, "processing", f"{where}: {path} is not an element with children")
        value = _part_value(parts["value"], where)
        info = targets.info()
        suffix = _value_key(parts["value"])
        key = name
        if info is not None and name not in info.elements and suffix and \
                f"{name}{suffix}" in info.elements:
            key = f"{name}{suffix}"
        spec = info.elements.get(key) if info else None
        if spec is not None and spec.is_list:
            container.setdefault(key, []).append(value)
        elif key in container:
            raise CoreError(422, "processing", f"{where}: {path}.{name} already has a value")
        else:
            container[key] = value
    elif op == "insert":
        index = _index(parts, "index", where)
        target_list = _list_of(locator, path, where, create=True)
        if index > len(target_list):
            raise CoreError(422, "processing", f"{where}: index {index} is past the end")
        target_list.insert(index, _part_value(parts.get("value") or {}, where))
    elif op == "delete":
        found = locator.locate(path)
        if not found:
            return
        loc = _one(found, path, where, allow_none=False)
        _remove(loc)
    elif op == "replace":
        loc = _one(locator.locate(path), path, where, allow_none=False)
        value = _part_value(parts.get("value") or {}, where)
        suffix = _value_key(parts.get("value") or {})
        base = _split_steps(path)[-1]
        if isinstance(loc.container, dict) and suffix and loc.key != base and \
                loc.key.startswith(base) and loc.key != f"{base}{suffix}":
            # A choice element changing type: valueQuantity -> valueString.
            del loc.container[loc.key]
            loc.container[f"{base}{suffix}"] = value
        else:
            loc.container[loc.key] = value
    elif op == "move":
        source = _index(parts, "source", where)
        destination = _index(parts, "destination", where)
        target_list = _list_of(locator, path, where, create=False)
        if not (0 <= source < len(target_list) and 0 <= destination < len(target_list)):
            raise CoreError(422, "processing", f"{where}: move index out of range")
        target_list.insert(destination, target_list.pop(source))
    else:
        raise CoreError(400, "not-supported", f"{where}: unknown patch operation {op!r}")


def _one(found: list[Location], path: str, where: str, allow_none: bool) -> Location:
    if len(found) > 1:
        raise CoreError(422, "multiple-matches",
                        f"{where}: {path} matches {len(found)} elements; it must match one")
    if not found:
        raise CoreError(422, "not-found", f"{where}: {path} matches nothing")
    return found[0]


def _index(parts: dict[str, dict[str, Any]], name: str, where: str) -> int:
    value = (parts.get(name) or {}).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CoreError(400, "required", f"{where}: {name} must be a non-negative integer")
    return value


def _list_of(locator: PathLocator, path: str, where: str, create: bool) -> list[Any]:
    steps = _split_steps(path)
    name = steps[-1]
    if not name.replace("_", "").isalnum():
        raise CoreError(400, "not-supported", f"{where}: the path must end in an element name")
    parent_path = ".".join(steps[:-1]) or locator.resource.get("resourceType", "")
    parent = _one(locator.locate(parent_path), parent_path, where, allow_none=False)
    container = parent.value
    if not isinstance(container, dict):
        raise CoreError(422, "processing", f"{where}: {parent_path} has no children")
    if name not in container:
        if not create:
            raise CoreError(422, "not-found", f"{where}: {path} matches nothing")
        container[name] = []
    target = container[name]
    if not isinstance(target, list):
        raise CoreError(422, "processing", f"{where}: {path} is not a repeating element")
    return target


def _remove(loc: Location) -> None:
    """Delete the value at ``loc`` and any container left empty (FHIR has no empty elements)."""
    del loc.container[loc.key]
    if loc.container or loc.parent is None:
        return
    owner = loc.parent.value
    if isinstance(loc.container, list) and isinstance(owner, dict):
        for key, value in list(owner.items()):
            if value is loc.container:
                del owner[key]
        if not owner and loc.parent.parent is not None:
            _remove(loc.parent)
    elif isinstance(loc.container, dict) and loc.parent.parent is not None:
        _remove(loc.parent)
