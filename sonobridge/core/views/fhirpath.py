"""FHIRPath for ViewDefinitions: fhirpathpy, held to the subset SQL on FHIR v2 requires.

Expressions are parsed once, strictly (fhirpathpy's parser recovers silently from syntax
errors and stops at the first expression it can read, so ``name.given )`` would run as
``name.given``), and every function they call is checked against what fhirpathpy implements
plus the functions the SQL on FHIR specification adds (``getResourceKey``,
``getReferenceKey``) or needs and fhirpathpy lacks (``lowBoundary``, ``highBoundary``). A view
naming anything else is refused before any row is read, with the function named — never
discovered half-way through a million resources.

Evaluation calls fhirpathpy's evaluator on a context built here rather than through
``fhirpathpy.evaluate``: the added functions need the typed nodes (a ``dateTime`` and a
``date`` are the same JSON string), and ``forEach`` hands nested expressions the typed node it
iterates, so ``value.ofType(Quantity)`` keeps working below a ``forEach``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import (
    invocation_registry,
)
from fhirpathpy.engine.invocations.constants import constants
from fhirpathpy.engine.nodes import FP_Quantity, FP_Type, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from sonobridge.core.views.fastpath import Fallback, compile_fast

MODEL: dict[str, Any] = models["r4"]
# Variables every expression may use besides the view's constants.
BUILTIN_VARIABLES = frozenset({"resource", "rootResource", "context", "ucum", "rowIndex",
                               "sct", "loinc"})


class FhirPathError(Exception):
    """An expression that cannot be used: ``function`` names the culprit when there is one."""

    def __init__(self, message: str, function: str | None = None) -> None:
        super().__init__(message)
        self.function = function


class _Raise(ErrorListener):  # type: ignore[misc,unused-ignore]
    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int,
                    msg: str, e: Any) -> None:
        raise FhirPathError(f"syntax error at character {column + 1}: {msg}")


def _parse(text: str) -> dict[str, Any]:
    listener = ASTPathListener()  # type: ignore[no-untyped-call,unused-ignore]
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.buildParseTrees = True
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    try:
        tree = parser.expression()
    except FhirPathError:
        raise
    except Exception as exc:  # the lexer's own exceptions (no viable alternative)
        raise FhirPathError(f"syntax error: {exc}") from None
    if tokens.LA(1) != Token.EOF:
        rest = tokens.LT(1).text
        raise FhirPathError(f"syntax error: unexpected {rest!r} after a complete expression")
    ParseTreeWalker().walk(listener, tree)
    parsed: dict[str, Any] = listener.parentStack[0]
    return parsed


# --------------------------------------------------------------------- added functions

def _resource_key(ctx: dict[str, Any], inputs: list[Any]) -> list[Any]:
    """``getResourceKey()``: the resource's id, the key ``getReferenceKey`` answers for
    references to it (SQL on FHIR: any value that joins; the logical id here)."""
    out = []
    for node in inputs:
        data = node.data if isinstance(node, ResourceNode) else node
        if isinstance(data, Mapping) and isinstance(data.get("id"), str):
            out.append(data["id"])
    return out


def _reference_key(ctx: dict[str, Any], inputs: list[Any], type_spec: Any = None
                   ) -> list[Any]:
    """``getReferenceKey([Type])``: the id of a literal reference (relative, absolute or
    versioned), only when it points at ``Type`` if one is named."""
    wanted = getattr(type_spec, "name", None) if type_spec is not None else None
    out = []
    for node in inputs:
        data = node.data if isinstance(node, ResourceNode) else node
        ref = data.get("reference") if isinstance(data, Mapping) else None
        if not isinstance(ref, str):
            continue
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) < 2:
            continue
        if wanted is not None and parts[-2] != wanted:
            continue
        out.append(parts[-1])
    return out


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
                      r"(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?"
                      r"(Z|[+-]\d{2}:\d{2})?$")
_TIME = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def _kind(node: Any) -> str | None:
    """The FHIR primitive type of a node, from the model's path types."""
    if not isinstance(node, ResourceNode) or node.path is None:
        return None
    path = str(node.path)
    if "." in path:
        path = MODEL["path2Type"].get(path, path)
    return path


def _date_boundary(text: str, kind: str, high: bool) -> str | None:
    match = _PARTIAL.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, frac, zone = match.groups()
    month = month or ("12" if high else "01")
    last = calendar.monthrange(int(year), int(month))[1]
    day = day or (f"{last:02d}" if high else "01")
    if kind == "date":
        return f"{year}-{month}-{day}"
    hour = hour or ("23" if high else "00")
    minute = minute or ("59" if high else "00")
    second = second or ("59" if high else "00")
    frac = (frac or "")[:3].ljust(3, "9" if high else "0")
    zone = zone or ("-12:00" if high else "+14:00")
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{frac}{zone}"


def _time_boundary(text: str, high: bool) -> str | None:
    match = _TIME.match(text)
    if match is None:
        return None
    hour, minute, second, frac = match.groups()
    minute = minute or ("59" if high else "00")
    second = second or ("59" if high else "00")
    frac = (frac or "")[:3].ljust(3, "9" if high else "0")
    return f"{hour}:{minute}:{second}.{frac}"


def _boundary(inputs: list[Any], high: bool) -> list[Any]:
    """``lowBoundary()``/``highBoundary()`` (FHIRPath 3.0, used by the SQL on FHIR tests):
    the least/greatest value a decimal, date, dateTime or time of its precision may stand for."""
    if len(inputs) != 1:
        return []
    node = inputs[0]
    value = node.data if isinstance(node, ResourceNode) else node
    if isinstance(value, FP_Type):
        value = str(value)
    if isinstance(value, bool):
        return []
    if isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, int | Decimal):
        number = Decimal(value)
        exponent = number.as_tuple().exponent
        step = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
        return [number + step if high else number - step]
    if not isinstance(value, str):
        return []
    kind = _kind(node)
    if kind in ("date", "dateTime", "instant"):
        found = _date_boundary(value, "date" if kind == "date" else "dateTime", high)
    elif kind == "time":
        found = _time_boundary(value, high)
    else:
        found = None
    return [found] if found is not None else []


def _low(ctx: dict[str, Any], inputs: list[Any]) -> list[Any]:
    return _boundary(inputs, high=False)


def _high(ctx: dict[str, Any], inputs: list[Any]) -> list[Any]:
    return _boundary(inputs, high=True)


def _join(ctx: dict[str, Any], inputs: list[Any], separator: Any = "") -> list[Any]:
    """``join([separator])``: one string even for an empty input (the SQL on FHIR tests
    expect ``''``, where fhirpathpy gives nothing)."""
    sep = separator if isinstance(separator, str) else ""
    texts = [plain(i) for i in inputs]
    return [sep.join(str(t) for t in texts if t is not _SKIP)]


ADDED: dict[str, dict[str, Any]] = {
    "join": {"fn": _join, "arity": {0: [], 1: ["String"]}},
    "getResourceKey": {"fn": _resource_key, "arity": {0: []}},
    "getReferenceKey": {"fn": _reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "lowBoundary": {"fn": _low, "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": _high, "arity": {0: [], 1: ["Integer"]}},
}
FUNCTIONS = frozenset(invocation_registry) | frozenset(ADDED)


def _walk(node: Any, functions: list[str], variables: list[str]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "Functn":
            ident = node.get("children", [{}])[0]
            functions.append(str(ident.get("text") or "".join(ident.get("terminalNodeText",
                                                                            []))))
        elif kind == "ExternalConstant":
            ident = node.get("children", [{}])[0]
            name = ident.get("text") or "".join(node.get("terminalNodeText", [])[1:])
            variables.append(str(name).strip("`'\""))
        for child in node.get("children", []):
            _walk(child, functions, variables)
    elif isinstance(node, list):
        for child in node:
            _walk(child, functions, variables)


class Expression:
    """One compiled expression: ``evaluate(node, variables)`` gives the raw result
    collection (typed nodes kept, for iteration); ``values`` gives plain values."""

    __slots__ = ("_tree", "fast", "text", "use_fast")

    def __init__(self, text: str, constants_known: frozenset[str]) -> None:
        self.text = text
        tree = _parse(text)
        functions: list[str] = []
        variables: list[str] = []
        _walk(tree, functions, variables)
        for name in functions:
            if name not in FUNCTIONS:
                raise FhirPathError(f"function {name}() is not supported", function=name)
        for name in variables:
            if name not in constants_known and name not in BUILTIN_VARIABLES:
                raise FhirPathError(f"%{name} is not a constant of this view")
        self._tree = tree["children"][0]
        self.fast = compile_fast(self._tree)
        # Set by the view when every expression it holds compiled (``fastpath.py``).
        self.use_fast = False

    def evaluate(self, node: Any, variables: Mapping[str, Any]) -> list[Any]:
        data_root = node if isinstance(node, list) else [node]
        if self.use_fast and self.fast is not None:
            try:
                return self.fast(data_root, variables)
            except Fallback:
                pass
        ctx = {"dataRoot": data_root, "$this": data_root,
               "vars": {"ucum": "http://unitsofmeasure.org", "context": node, **variables},
               "model": MODEL, "userInvocationTable": ADDED}
        try:
            result = do_eval(ctx, data_root, self._tree)  # type: ignore[no-untyped-call,unused-ignore]
        except FhirPathError:
            raise
        except Exception as exc:
            raise FhirPathError(f"{self.text!r} cannot be evaluated: {exc}") from None
        return result if isinstance(result, list) else [result]

    def values(self, node: Any, variables: Mapping[str, Any]) -> list[Any]:
        if self.use_fast and self.fast is not None:
            try:
                raw = self.fast(node if isinstance(node, list) else [node], variables)
            except Fallback:
                pass
            else:  # plain JSON already: only floats become decimals
                return [Decimal(str(v)) if isinstance(v, float) else v for v in raw]
        return [v for v in (plain(item) for item in self.evaluate(node, variables))
                if v is not _SKIP]


_SKIP = object()


def plain(item: Any) -> Any:
    """A result item as a plain value: JSON data, ``Decimal`` numbers, strings for dates
    and times, ``_SKIP`` for the extension-only holder of a primitive without a value."""
    data = item.data if isinstance(item, ResourceNode) else item
    if isinstance(data, FP_Quantity):
        return {"value": data.value, "unit": data.unit}
    if isinstance(data, FP_Type):
        return str(data)
    if isinstance(data, dict) and list(data) == ["extension"]:
        return _SKIP
    if isinstance(data, float):
        return Decimal(str(data))
    return data


def reset_clock() -> None:
    """``now()``/``today()`` are fixed per evaluation by fhirpathpy; a run resets them once."""
    constants.reset()  # type: ignore[no-untyped-call,unused-ignore]
