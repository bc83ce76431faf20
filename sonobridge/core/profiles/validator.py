"""An instance checked against a profile's snapshot (StructureDefinition, FHIR R4).

The snapshot is compiled once into a tree of element nodes (children by name, slices under
their slicing element). Walking the instance along that tree checks, for each element present
or required: cardinality (``min``/``max``, ``max`` 0 forbids), the type of a choice element
(``value[x]``), ``fixed[x]`` (exact) and ``pattern[x]`` (the instance holds at least the
pattern), reference targets (``targetProfile``), required bindings to value sets the server
holds, FHIRPath invariants (``constraint.expression``; severity ``error`` refuses, a warning
is reported by ``$validate``), the profile a type names (an extension's own
StructureDefinition), and slicing by ``value``/``pattern`` discriminators (on codings,
extensions by ``url``, or any path): each slice's cardinality, the slice's constraints on the
values it matched, and ``closed`` slicing refusing what matches no slice.

Not done here: the base R4 rules (structure, primitive formats, base required bindings) are the
write path's own validation (``core.validation``), which ``$validate`` runs first; the base
invariants (``ele-1``, ``dom-*``…) are those rules' business too, so constraints whose
``source`` is a base type's definition (``…/StructureDefinition/Element``, ``…/Observation``;
not an HL7 profile such as ``…/vitalsigns``) are skipped, as are ``ele-1``, ``ext-1`` and
``dom-*`` by key. ``type`` discriminators are evaluated on
``$this`` (a choice element's slices such as ``value[x]:valueQuantity``), ``exists`` where the
slice sets ``min`` >= 1 or ``max`` 0 at the path; a ``profile`` discriminator, a ``resolve()``
path, or a slice that fixes nothing at the path cannot be evaluated: that slice is not judged
(a warning in ``$validate``), rather than refused on a guess. A StructureDefinition without a
snapshot is not compiled (the server does not generate snapshots of other guides' profiles).

Problems are ``Issue``s with a FHIRPath ``expression`` that points at the instance
(``ServiceRequest.category[0]``, ``Task.businessStatus``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from sonobridge.core.errors import Issue
from sonobridge.core.profiles.terminology import Codes, canonical

R4 = models["r4"]
HL7_BASE = "http://hl7.org/fhir/StructureDefinition/"
# The base rules every element and resource carries; older packages omit their ``source``.
BASE_KEYS = frozenset({"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6"})
# Work bounds: a hostile or huge profile must not make one write arbitrarily expensive.
MAX_ISSUES = 100
MAX_PROFILE_DEPTH = 6
_REFERENCE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")


@dataclass
class Node:
    """One element of a snapshot: its definition, its children by name, its slices."""

    element: dict[str, Any]
    name: str  # the last path part: "category", "value[x]"
    children: list[Node] = field(default_factory=list)
    slices: list[Node] = field(default_factory=list)

    @property
    def slice_name(self) -> str | None:
        name = self.element.get("sliceName")
        return name if isinstance(name, str) else None

    def child(self, name: str) -> Node | None:
        for node in self.children:
            if node.name == name or (node.name.endswith("[x]") and
                                     name.startswith(node.name[:-3])):
                return node
        return None


@dataclass
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    compiled: Callable[..., Any] | None
    problem: str | None  # why it could not be compiled


@dataclass
class Profile:
    """A compiled StructureDefinition."""

    url: str
    type: str
    name: str
    root: Node
    invariants: dict[str, list[Invariant]] = field(default_factory=dict)  # element id ->


def compile_profile(sd: dict[str, Any]) -> Profile | None:
    """The tree of ``sd``'s snapshot (``None`` without one)."""
    elements = (sd.get("snapshot") or {}).get("element") or []
    if not elements or not isinstance(elements[0], dict):
        return None
    root = Node(elements[0], str(elements[0].get("path", "")))
    profile = Profile(str(sd.get("url", "")), str(sd.get("type", "")),
                      str(sd.get("name", "")), root)
    nodes: dict[str, Node] = {str(elements[0].get("id") or elements[0].get("path")): root}
    _invariants(profile, str(elements[0].get("id") or elements[0].get("path")), elements[0])
    for element in elements[1:]:
        if not isinstance(element, dict):
            continue
        eid = str(element.get("id") or element.get("path") or "")
        if "." not in eid:
            continue
        parent_id, last = _split_id(eid)
        parent = nodes.get(parent_id)
        if parent is None:
            continue
        name, _, slice_name = last.partition(":")
        node = Node(element, name)
        if slice_name:
            if "/" in slice_name:  # re-slicing: not supported, the base slice still applies
                continue
            base = next((n for n in parent.children if n.name == name), None)
            if base is None:
                continue
            base.slices.append(node)
        else:
            parent.children.append(node)
        nodes[eid] = node
        _invariants(profile, eid, element)
    return profile


def _split_id(eid: str) -> tuple[str, str]:
    """``A.b:s.c`` -> (``A.b:s``, ``c``). Slice names hold no dots (R4 ``eld-16``)."""
    parent, _, last = eid.rpartition(".")
    return parent, last


def _from_base(source: str) -> bool:
    """Whether a constraint comes from a base type's definition (``…/StructureDefinition/
    Element``, ``…/Observation``: capitalised), not from an HL7 profile (``…/vitalsigns``),
    whose invariants are the profile's to enforce."""
    return source.startswith(HL7_BASE) and source[len(HL7_BASE):][:1].isupper()


def _invariants(profile: Profile, eid: str, element: dict[str, Any]) -> None:
    out: list[Invariant] = []
    for constraint in element.get("constraint", []) or []:
        if not isinstance(constraint, dict) or not constraint.get("expression"):
            continue
        if _from_base(str(constraint.get("source", ""))) or \
                str(constraint.get("key", "")) in BASE_KEYS:
            continue
        expression = str(constraint["expression"])
        compiled: Callable[..., Any] | None = None
        problem = None
        try:
            compiled = fhirpathpy.compile(expression, R4)
        except Exception as exc:  # the parser raises several kinds; all mean "cannot run"
            problem = f"{type(exc).__name__}: {exc}"
        out.append(Invariant(str(constraint.get("key", "")),
                             str(constraint.get("severity", "error")),
                             str(constraint.get("human", "")), expression, compiled, problem))
    if out:
        profile.invariants[eid] = out


class Context:
    """What one validation needs from the server: other profiles (an extension's) and value
    sets; and what it found."""

    def __init__(self, profile_of: Callable[[str], Profile | None],
                 codes_of: Callable[[str], Codes | None],
                 type_of: Callable[[str], str | None], root: dict[str, Any]) -> None:
        self.profile_of = profile_of
        self.codes_of = codes_of
        self.type_of = type_of
        self.root = root
        self.issues: list[Issue] = []
        self.depth = 0

    def add(self, code: str, message: str, path: str, severity: str = "error") -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue(code, f"{path}: {message}", severity=severity,
                                     expression=[path]))


def validate(resource: dict[str, Any], profile: Profile, ctx: Context) -> list[Issue]:
    """The problems of ``resource`` against ``profile`` (errors and warnings)."""
    res_type = str(resource.get("resourceType", ""))
    if profile.type and res_type != profile.type:
        ctx.add("invalid", f"the profile {profile.url} is for {profile.type}, not {res_type}",
                res_type or "resourceType")
        return ctx.issues
    _check_invariants(profile, profile.root, resource, res_type, ctx)
    _walk(profile, profile.root, resource, res_type, ctx)
    return ctx.issues


def _element_id(node: Node) -> str:
    return str(node.element.get("id") or node.element.get("path") or "")


def _values(obj: dict[str, Any], name: str, path: str) -> list[tuple[str, str, Any]]:
    """(key, FHIRPath, value) of each value of element ``name`` in ``obj``."""
    if name.endswith("[x]"):
        stem = name[:-3]
        keys = [k for k in obj if k.startswith(stem) and len(k) > len(stem)
                and k[len(stem)].isupper()]
    else:
        keys = [name] if name in obj else []
    out: list[tuple[str, str, Any]] = []
    for key in keys:
        value = obj[key]
        if isinstance(value, list):
            out.extend((key, f"{path}.{key}[{i}]", item) for i, item in enumerate(value))
        else:
            out.append((key, f"{path}.{key}", value))
    return out


def _walk(profile: Profile, node: Node, obj: Any, path: str, ctx: Context) -> None:
    if not isinstance(obj, dict):
        return
    for child in node.children:
        values = _values(obj, child.name, path)
        where = f"{path}.{child.name.removesuffix('[x]')}"
        _cardinality(child.element, len(values), where, ctx)
        for key, vpath, value in values:
            _check_value(profile, child, key, value, vpath, ctx)
        if child.slices:
            _check_slices(profile, child, values, where, ctx)


def _cardinality(element: dict[str, Any], count: int, where: str, ctx: Context,
                 what: str = "") -> None:
    low = element.get("min", 0)
    high = element.get("max", "*")
    if isinstance(low, int) and count < low:
        ctx.add("required", f"at least {low}{what} required, {count} present", where)
    if isinstance(high, str) and high != "*" and high.isdecimal() and count > int(high):
        if high == "0":
            ctx.add("structure", f"not allowed here{what}", where)
        else:
            ctx.add("structure", f"at most {high}{what} allowed, {count} present", where)


def _check_value(profile: Profile, node: Node, key: str, value: Any, path: str,
                 ctx: Context) -> None:
    element = node.element
    types = [t for t in element.get("type", []) or [] if isinstance(t, dict)]
    if node.name.endswith("[x]") and types:
        suffix = key[len(node.name) - 3:].lower()
        allowed = [str(t.get("code", "")) for t in types]
        if suffix not in {a.lower() for a in allowed}:
            ctx.add("structure", f"type {key[len(node.name) - 3:]} is not allowed here "
                    f"({', '.join(allowed)})", path)
            return
    for prop, expected in element.items():
        if prop.startswith("fixed") and value != expected:
            ctx.add("value", f"must be exactly {_show(expected)}", path)
        elif prop.startswith("pattern") and not matches(value, expected):
            ctx.add("value", f"does not match the required pattern {_show(expected)}", path)
    _check_reference(types, value, path, ctx)
    _check_binding(element, value, path, ctx)
    _check_invariants(profile, node, value, path, ctx)
    _check_type_profiles(types, value, path, ctx)
    if node.children:
        _walk(profile, node, value, path, ctx)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element of the pattern is present in the value (a list
    in the pattern: each of its items matched by some item of the value)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches(i, p) for i in items) for p in pattern)
    return bool(value == pattern)


def _check_reference(types: list[dict[str, Any]], value: Any, path: str,
                     ctx: Context) -> None:
    if not isinstance(value, dict) or not types:
        return
    targets: set[str] = set()
    for t in types:
        if t.get("code") != "Reference":
            return
        for target in t.get("targetProfile", []) or []:
            resolved = ctx.type_of(canonical(str(target)))
            targets.add(resolved or str(target).rsplit("/", 1)[-1])
    if not targets or "Resource" in targets:
        return
    ref = value.get("reference")
    found: str | None = None
    if isinstance(ref, str):
        m = _REFERENCE.search(ref)
        found = m.group("type") if m else None
    if found is None and isinstance(value.get("type"), str):
        found = value["type"]
    if found is not None and found not in targets:
        ctx.add("invalid", f"refers to a {found}; the profile allows "
                f"{' or '.join(sorted(targets))}", path)


def _check_binding(element: dict[str, Any], value: Any, path: str, ctx: Context) -> None:
    binding = element.get("binding")
    if not isinstance(binding, dict) or binding.get("strength") != "required":
        return
    vs_url = binding.get("valueSet")
    if not isinstance(vs_url, str):
        return
    codes = ctx.codes_of(canonical(vs_url))
    if codes is None:
        return
    if isinstance(value, str):
        if not codes.has(None, value):
            ctx.add("code-invalid", f"{value!r} is not in the value set {vs_url}", path)
        return
    if not isinstance(value, dict):
        return
    is_concept = "coding" in value or "text" in value or not ("code" in value or
                                                                "system" in value)
    codings = value.get("coding", []) if is_concept else [value]
    if not isinstance(codings, list):
        return
    given = [(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)]
    if not any(isinstance(code, str) and codes.has(system if isinstance(system, str) else "",
                                                   code) for system, code in given):
        shown = ", ".join(f"{s}|{c}" for s, c in given) or "no coding"
        ctx.add("code-invalid", f"{shown}: none is in the value set {vs_url} (required "
                "binding)", path)


def _check_invariants(profile: Profile, node: Node, value: Any, path: str,
                      ctx: Context) -> None:
    for inv in profile.invariants.get(_element_id(node), ()):
        if inv.compiled is None:
            ctx.add("not-supported", f"invariant {inv.key} cannot be evaluated "
                    f"({inv.problem})", path, "warning")
            continue
        try:
            result = inv.compiled(value, {"resource": ctx.root, "rootResource": ctx.root})
        except Exception as exc:  # an engine error on this data: say so, do not refuse
            ctx.add("not-supported", f"invariant {inv.key} could not be evaluated: "
                    f"{type(exc).__name__}", path, "warning")
            continue
        if result == [False]:
            severity = "error" if inv.severity == "error" else "warning"
            ctx.add("invariant", f"{inv.key}: {inv.human or inv.expression}", path, severity)


def _check_type_profiles(types: list[dict[str, Any]], value: Any, path: str,
                         ctx: Context) -> None:
    if not isinstance(value, dict) or ctx.depth >= MAX_PROFILE_DEPTH:
        return
    for t in types:
        for url in t.get("profile", []) or []:
            profile = ctx.profile_of(canonical(str(url)))
            if profile is None:
                continue
            ctx.depth += 1
            try:
                _check_invariants(profile, profile.root, value, path, ctx)
                _walk(profile, profile.root, value, path, ctx)
            finally:
                ctx.depth -= 1


# ------------------------------------------------------------------------------ slicing

def _discriminators(base: Node) -> list[dict[str, Any]]:
    slicing = base.element.get("slicing") or {}
    found = [d for d in slicing.get("discriminator", []) or [] if isinstance(d, dict)]
    if not found and base.name in ("extension", "modifierExtension"):
        return [{"type": "value", "path": "url"}]
    return found


def _expected(slice_node: Node, path: str) -> tuple[bool, Any]:
    """What a slice requires at a discriminator's ``path``: (found, value)."""
    node: Node | None = slice_node
    if path != "$this":
        for part in path.split("."):
            node = node.child(part) if node is not None else None
    if node is not None:
        for prop, value in node.element.items():
            if prop.startswith(("fixed", "pattern")):
                return True, value
    if path == "url":
        for t in slice_node.element.get("type", []) or []:
            for url in t.get("profile", []) or []:
                return True, canonical(str(url))
    for prop, value in slice_node.element.items():
        if prop.startswith(("fixed", "pattern")):
            current: Any = value
            for part in path.split("."):
                if path == "$this":
                    break
                if not isinstance(current, dict) or part not in current:
                    return False, None
                current = current[part]
            return True, current
    return False, None


def _at(value: Any, path: str) -> list[Any]:
    found = [value]
    if path == "$this":
        return found
    for part in path.split("."):
        nxt: list[Any] = []
        for item in found:
            items = item if isinstance(item, list) else [item]
            for one in items:
                if not isinstance(one, dict):
                    continue
                if part in one:
                    nxt.append(one[part])
                else:  # a choice element named without its type: value -> valueQuantity
                    nxt.extend(v for k, v in one.items() if k.startswith(part)
                               and len(k) > len(part) and k[len(part)].isupper())
        found = nxt
    return found


class _Unknown(Exception):
    """A discriminator this validator cannot evaluate (``profile``, a ``resolve()`` path, a
    slice that says nothing at the discriminator's path)."""


def _slice_matches(slice_node: Node, discriminators: list[dict[str, Any]], key: str,
                   value: Any) -> bool:
    """Whether ``value`` (under ``key``: ``valueQuantity``…) belongs to the slice; raises
    ``_Unknown`` when a discriminator cannot be evaluated."""
    for d in discriminators:
        kind = d.get("type")
        path = str(d.get("path", "$this"))
        if "resolve()" in path or kind not in ("value", "pattern", "type", "exists"):
            raise _Unknown(f"{kind} discriminator on {path}")
        if kind == "type":
            if path != "$this":
                raise _Unknown(f"type discriminator on {path}")
            codes = {str(t.get("code", "")).lower()
                     for t in slice_node.element.get("type", []) or []}
            suffix = key[len(slice_node.name) - 3:].lower() if slice_node.name.endswith(
                "[x]") else ""
            if not codes or (suffix and suffix not in codes):
                return False
            continue
        if kind == "exists":
            node = _node_at(slice_node, path)
            if node is None:
                raise _Unknown(f"exists discriminator on {path}")
            present = bool(_at(value, path))
            if node.element.get("max") == "0":
                if present:
                    return False
            elif isinstance(node.element.get("min"), int) and node.element["min"] >= 1:
                if not present:
                    return False
            else:
                raise _Unknown(f"exists discriminator on {path}")
            continue
        ok, expected = _expected(slice_node, path)
        if not ok:
            raise _Unknown(f"{kind} discriminator on {path}: the slice fixes no value there")
        candidates = _at(value, path)
        if not any(matches(c, expected) or (isinstance(c, list) and not isinstance(
                expected, list) and any(matches(i, expected) for i in c)) for c in candidates):
            return False
    return True


def _node_at(slice_node: Node, path: str) -> Node | None:
    node: Node | None = slice_node
    for part in path.split("."):
        node = node.child(part) if node is not None else None
    return node


def _check_slices(profile: Profile, base: Node, values: list[tuple[str, str, Any]],
                  where: str, ctx: Context) -> None:
    """Each slice's cardinality and constraints on the values it matches; ``closed`` slicing
    refuses values of no slice. A slice whose discriminator cannot be evaluated is not judged
    (a warning says so): better say less than refuse valid data."""
    discriminators = _discriminators(base)
    matched = [False] * len(values)
    for slice_node in base.slices:
        try:
            hits = [i for i, (key, _, v) in enumerate(values)
                    if _slice_matches(slice_node, discriminators, key, v)]
        except _Unknown as why:
            ctx.add("not-supported", f"slice {slice_node.slice_name!r} not checked ({why})",
                    where, "warning")
            matched = [True] * len(values)
            continue
        _cardinality(slice_node.element, len(hits), where, ctx,
                     f" of slice {slice_node.slice_name!r}")
        for i in hits:
            matched[i] = True
            key, vpath, value = values[i]
            _check_value(profile, slice_node, key, value, vpath, ctx)
    rules = (base.element.get("slicing") or {}).get("rules", "open")
    if rules == "closed":
        for i, hit in enumerate(matched):
            if not hit:
                ctx.add("structure", "matches none of the slices "
                        f"({', '.join(str(s.slice_name) for s in base.slices)}) and the "
                        "slicing is closed", values[i][1])
