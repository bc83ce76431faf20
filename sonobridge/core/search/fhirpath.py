"""A compiler for the FHIRPath that search parameter expressions use, into plain Python closures.

Search parameters are defined by FHIRPath expressions. Evaluating them with fhirpathpy costs
about 0.5 ms each (twenty parameters make a Patient write 10 ms) and fhirpathpy has no
``resolve()``, which 50 R4 parameters use (``subject.where(resolve() is Patient)``). The R4
expressions use a small, regular subset: unions, navigation (with choice elements), ``[n]``,
``as``/``ofType``, ``where(resolve() is T)`` and ``where(field='literal')``. This module compiles
that subset once per parameter into closures that walk the resource dict, typing every node from
the R4B models, and falls back to fhirpathpy for anything else (one R4 expression: ``deceased``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from sonobridge.core.schema import resource_info, type_info


class Node(NamedTuple):
    """A value found by an expression, with its FHIR type (``?`` when unknown)."""

    value: Any
    fhir_type: str
    model: Any  # model class for complex values, else None


Extractor = Callable[[Node], list[Node]]


class Unsupported(ValueError):
    """The expression uses FHIRPath outside the compiled subset."""


def split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quotes, parentheses and brackets."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and \
            split_top(text[1:-1], ")(") == [text[1:-1].strip()] and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            return False
    return depth == 0


_AS_OP = re.compile(r"^(?P<path>.+?)\s+as\s+(?P<type>[A-Za-z]+)$", re.S)
_WHERE_EQ = re.compile(r"^(?P<field>[A-Za-z]+)\s*=\s*'(?P<value>[^']*)'$")
_WHERE_RESOLVE = re.compile(r"^resolve\(\)\s+is\s+(?P<type>[A-Za-z]+)$")
_INDEX = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d+)\]$")
_FUNC = re.compile(r"^(?P<name>[A-Za-z]+)\((?P<args>.*)\)$", re.S)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def compile_expression(expression: str, res_type: str) -> Extractor:
    """Compile ``expression`` for resources of ``res_type``; branches for other types drop out.

    The result carries ``roots``: the top-level JSON keys it can read (``None`` if unknown),
    so that indexing skips a parameter at once when the resource has none of them.
    """
    branches = []
    roots: set[str] | None = set()
    for branch in split_top(expression, "|"):
        branch = _strip_parens(branch)
        steps = split_top(branch, ".")
        head = _INDEX.match(steps[0])
        first = head.group("name") if head else re.split(r"[ .]", steps[0].lstrip("("))[0]
        if first not in (res_type, "Resource", "DomainResource"):
            continue
        branches.append(_compile_branch(branch, root=True))
        roots = _branch_roots(branch, res_type, roots)
    def union(node: Node) -> list[Node]:
        return [found for branch in branches for found in branch(node)]

    run: Extractor
    if not branches:
        run = lambda node: []  # noqa: E731
    elif len(branches) == 1:
        run = branches[0]
    else:
        run = union
    # A function attribute, which ``Callable`` does not declare: the registry reads it with
    # ``getattr(extract, "roots", None)``.
    run.__dict__["roots"] = frozenset(roots) if roots is not None else None
    return run


def _branch_roots(branch: str, res_type: str, roots: set[str] | None) -> set[str] | None:
    if roots is None:
        return None
    text = branch.lstrip("(")
    parts = re.split(r"[ .()\[]", text)
    if len(parts) < 2 or not _NAME.match(parts[1] or ""):
        return None
    info = resource_info(res_type)
    if info is None:
        return None
    names = {e.name for e in _candidates(info, parts[1])}
    return roots | names if names else None


def compile_relative(expression: str) -> Extractor:
    """Compile an expression evaluated on a node (composite components: ``code``, ``value``)."""
    branches = [_compile_branch(_strip_parens(b), root=False)
                for b in split_top(expression, "|")]
    return lambda node: [found for branch in branches for found in branch(node)]


def _compile_branch(branch: str, root: bool) -> Extractor:
    cast = None
    match = _AS_OP.match(branch)
    if match and split_top(branch, " as ")[0] != branch:
        branch, cast = _strip_parens(match.group("path")), match.group("type")
    steps = split_top(branch, ".")
    head: Extractor | None = None
    if steps[0].startswith("("):  # (Observation.value as CodeableConcept).text
        head = _compile_branch(_strip_parens(steps[0]), root=root)
        steps = steps[1:]
    elif root:
        steps = steps[1:]
    ops = [_compile_step(step) for step in steps]
    if cast:
        ops.append(_of_type(cast))

    def run(node: Node) -> list[Node]:
        nodes = head(node) if head is not None else [node]
        for op in ops:
            nodes = op(nodes)
            if not nodes:
                break
        return nodes

    return run


def _compile_step(step: str) -> Callable[[list[Node]], list[Node]]:
    index = _INDEX.match(step)
    if index:
        name, position = index.group("name"), int(index.group("index"))
        navigate = _child(name)
        return lambda nodes: navigate(nodes)[position:position + 1]
    func = _FUNC.match(step)
    if func:
        return _function(func.group("name"), func.group("args").strip())
    if _NAME.match(step):
        return _child(step)
    match = _AS_OP.match(_strip_parens(step))
    if match:  # a parenthesised cast inside a path: (value as Quantity)
        path_ops = [_compile_step(s) for s in split_top(match.group("path"), ".")]
        cast = _of_type(match.group("type"))

        def run(nodes: list[Node]) -> list[Node]:
            for op in path_ops:
                nodes = op(nodes)
            return cast(nodes)

        return run
    raise Unsupported(step)


def _function(name: str, args: str) -> Callable[[list[Node]], list[Node]]:
    if name in ("as", "ofType"):
        return _of_type(args)
    if name == "first" and not args:
        return lambda nodes: nodes[:1]
    if name == "where":
        resolve = _WHERE_RESOLVE.match(args)
        if resolve:
            target = resolve.group("type")
            return lambda nodes: [n for n in nodes if reference_type(n.value) == target]
        equals = _WHERE_EQ.match(args)
        if equals:
            field, literal = equals.group("field"), equals.group("value")
            return lambda nodes: [n for n in nodes
                                  if isinstance(n.value, dict) and n.value.get(field) == literal]
    if name == "extension":
        url = args.strip("'\"")
        navigate = _child("extension")
        return lambda nodes: [n for n in navigate(nodes)
                              if isinstance(n.value, dict) and n.value.get("url") == url]
    raise Unsupported(f"{name}({args})")


# FHIRPath's System types and the FHIR primitives they stand for (FHIRPath's FHIR model
# mapping): R4's code-value-date composite casts ``value.as(DateTime)``, and an Observation's
# valueDateTime is a FHIR ``dateTime``; compared by name alone it never matched.
_SYSTEM_TYPES = {"DateTime": ("dateTime", "instant"), "Date": ("date",), "Time": ("time",),
                 "String": ("string",), "Boolean": ("boolean",), "Integer": ("integer",),
                 "Decimal": ("decimal",)}


def _of_type(type_name: str) -> Callable[[list[Node]], list[Node]]:
    names = (type_name, *_SYSTEM_TYPES.get(type_name, ()))

    def run(nodes: list[Node]) -> list[Node]:
        out = []
        for node in nodes:
            if node.fhir_type in names or (
                    node.fhir_type == "Resource" and isinstance(node.value, dict)
                    and node.value.get("resourceType") == type_name):
                out.append(node)
        return out

    return run


def _info_for(node: Node) -> Any:
    if node.fhir_type == "Resource" or node.model is None:
        if isinstance(node.value, dict) and "resourceType" in node.value:
            return resource_info(node.value["resourceType"])
        return None
    return type_info(node.model)


_CANDIDATES: dict[tuple[int, str], tuple[Any, ...]] = {}


_CAST = re.compile(r"^(?:as|ofType)\((?P<type>[A-Za-z]+)\)$")
SELF = "%self"  # cast_roots: a branch that is the resource itself


def cast_roots(branch: str, res_type: str) -> set[str] | None:
    """The top-level elements one branch of an expression reads, narrower than
    ``compile_expression``'s ``roots`` where a cast keeps one choice: ``None`` when not known
    here, an empty set for another type's branch, ``{SELF}`` for the resource itself. A cast
    right on a choice element (``Observation.value as string``,
    ``Observation.value.as(Quantity)``) keeps only the choices it can keep, never fewer than
    the values come from: a choice whose type differs from the cast only in case is kept
    (``as(DateTime)`` keeps ``valueDateTime``), anything else keeps every choice. The search
    index keys its memo of a parameter's rows on these (``registry._memo_roots``)."""
    info = resource_info(res_type)
    if info is None:
        return None
    branch = _strip_parens(branch)
    cast = None
    found = _AS_OP.match(branch)
    if found is not None and split_top(branch, " as ")[0] != branch:
        branch, cast = _strip_parens(found.group("path")), found.group("type")
    steps = split_top(branch, ".")
    if steps[0].startswith("("):  # (Observation.value as CodeableConcept).text
        return cast_roots(steps[0], res_type)
    if steps[0] not in (res_type, "Resource", "DomainResource"):
        return set() if _NAME.match(steps[0]) else None  # another type's: dropped too
    if len(steps) == 1:
        return {SELF} if cast is None else None
    if not _NAME.match(steps[1]):
        return None
    elements = _candidates(info, steps[1])
    if not elements:
        return None
    if len(steps) == 3 and cast is None:
        found = _CAST.match(steps[2])
        cast = found.group("type") if found is not None else None
    elif len(steps) != 2:
        cast = None
    if cast is not None:
        wanted = cast.lower()
        elements = tuple(e for e in elements
                         if e.kind == "resource" or str(e.fhir_type).lower() == wanted)
    return {e.name for e in elements}


def relative_roots(expression: str, res_type: str) -> set[str] | None:
    """``cast_roots`` of an expression relative to the resource (a composite component's,
    such as ``value.as(Quantity)``), every branch; ``None`` when any is not known here."""
    roots: set[str] = set()
    for part in split_top(expression, "|"):
        inner = _strip_parens(part)
        if not _NAME.match(split_top(inner, ".")[0]):
            return None
        found = cast_roots(f"{res_type}.{inner}", res_type)
        if found is None or SELF in found:
            return None
        roots |= found
    return roots


def _candidates(info: Any, name: str) -> tuple[Any, ...]:
    """The elements a name can mean in a type: itself, or every variant of a choice."""
    key = (id(info), name)
    found = _CANDIDATES.get(key)
    if found is None:
        spec = info.elements.get(name)
        found = (spec,) if spec is not None else tuple(
            e for k, e in info.elements.items()
            if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper())
        _CANDIDATES[key] = found
    return found


def _child(name: str) -> Callable[[list[Node]], list[Node]]:
    def run(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            value = node.value
            if not isinstance(value, dict):
                continue
            info = _info_for(node)
            if info is None:
                _untyped(value, name, out)
                continue
            for element in _candidates(info, name):
                child = value.get(element.name)
                if child is None:
                    continue
                items = child if isinstance(child, list) else [child]
                for item in items:
                    if item is None:
                        continue
                    if element.kind == "resource":
                        out.append(Node(item, "Resource", None))
                    else:
                        out.append(Node(item, element.fhir_type, element.model))
        return out

    return run


def _untyped(value: dict[str, Any], name: str, out: list[Node]) -> None:
    """Navigation where no model is known (types R4B lacks): by key, choice by prefix."""
    keys = [name] if name in value else [
        k for k in value if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()]
    for key in keys:
        items = value[key] if isinstance(value[key], list) else [value[key]]
        suffix = key[len(name):] if key != name else ""
        type_name = suffix[0].lower() + suffix[1:] if suffix and suffix in _PRIMITIVE_SUFFIXES \
            else (suffix or "?")
        out.extend(Node(item, type_name, None) for item in items if item is not None)


_PRIMITIVE_SUFFIXES = {"Boolean", "Integer", "Decimal", "String", "Uri", "Url", "Canonical",
                       "Code", "Id", "DateTime", "Date", "Time", "Instant", "Markdown",
                       "Oid", "Uuid", "PositiveInt", "UnsignedInt", "Base64Binary"}


def reference_type(value: Any) -> str | None:
    """The resource type a Reference points at, from its ``reference`` or ``type``."""
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith(("#", "urn:")):
        parts = ref.split("?")[0].split("/")
        if "_history" in parts:
            parts = parts[:parts.index("_history")]
        if len(parts) >= 2:
            return parts[-2]
    kind = value.get("type")
    return kind if isinstance(kind, str) else None


def fhirpathpy_extractor(expression: str) -> Extractor:
    """The slow, general path: fhirpathpy with the R4 model; nodes are untyped."""
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    compiled = fp_compile(expression, models["r4"])

    def run(node: Node) -> list[Node]:
        try:
            values = compiled(node.value, None)  # no context variables
        except Exception:  # an expression failing on odd data yields no index values
            return []
        return [Node(v, _shape_type(v), None) for v in values if v is not None]

    return run


def _shape_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    return "?"


def build_extractor(expression: str, res_type: str) -> Extractor:
    try:
        return compile_expression(expression, res_type)
    except Unsupported:
        return fhirpathpy_extractor(expression)
