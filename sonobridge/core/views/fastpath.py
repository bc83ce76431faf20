"""A compiled fast path for the FHIRPath most views are made of.

fhirpathpy interprets its syntax tree node by node, wrapping every value in a typed node; a
view of seven columns spends ~300 µs per resource there. The expressions views are written
with — member paths, ``[n]``, ``where``, ``first``, ``exists``, ``empty``, ``not``, ``count``,
``join``, ``extension``, ``contains``/``startsWith``/``endsWith``, ``lower``/``upper``,
``ofType`` on a choice element, ``getResourceKey``,
``getReferenceKey``, ``=``/``!=`` against a literal, ``and``/``or``, literals, constants,
``$this`` — are compiled here into Python closures over the plain JSON, about ten times faster.

Anything outside that subset is not compiled (``compile_fast`` returns ``None``), and a view
uses the fast path only when every one of its expressions compiled, so one view never mixes
typed and plain nodes. A compiled expression that meets a case it does not decide the way
FHIRPath would (a date compared as text, a non-boolean in ``and``, several values where one
is expected) raises ``Fallback``, and that expression is evaluated by fhirpathpy instead. The
SQL on FHIR test suite runs on both paths (tests/core/test_views_spec.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from fhirpathpy.models import models

Fn = Callable[[list[Any], Mapping[str, Any]], list[Any]]
# choice element name -> its type suffixes ("value" -> {"Quantity", "String", ...})
CHOICES: dict[str, set[str]] = {}
for _path, _types in models["r4"]["choiceTypePaths"].items():
    CHOICES.setdefault(_path.rsplit(".", 1)[-1], set()).update(
        t[0].upper() + t[1:] for t in _types)
_DATE_LIKE = re.compile(r"^\d{4}(-\d{2})?(-\d{2})?(T|$)|^\d{2}:\d{2}")
_RESERVED_VARS = frozenset({"ucum", "context", "sct", "loinc"})


class Fallback(Exception):
    """This value is not one the fast path decides: ask fhirpathpy."""


class _NotFast(Exception):
    pass


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in node.get("children", []) if isinstance(c, dict)]


def _ident(node: dict[str, Any]) -> str:
    text = node.get("text") or "".join(node.get("terminalNodeText", []))
    return str(text).strip("`")


def _step(focus: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    suffixes = CHOICES.get(name)
    size = len(name)
    for item in focus:
        if not isinstance(item, dict):
            continue
        value = item.get(name)
        if value is None and suffixes is not None:
            # A choice element: its one key is name + type (the resource's few keys are
            # fewer than the element's possible types).
            for key in item:
                if key[size:] in suffixes and key.startswith(name):
                    value = item[key]
                    break
        if value is None:
            continue
        if isinstance(value, list):
            if None in value:
                out.extend(v for v in value if v is not None)
            else:
                out.extend(value)
        else:
            out.append(value)
    return out


def _single(values: list[Any]) -> Any:
    if len(values) > 1:
        raise Fallback("a collection where one value is expected")
    return values[0] if values else None


def _date_like(text: str) -> bool:
    # Every form starts with a digit: the pattern is tried only then.
    return text[:1].isdigit() and _DATE_LIKE.match(text) is not None


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):  # the usual case, first
        if _date_like(left) or _date_like(right):
            raise Fallback("dates and times compare by value, not text")
        return left == right
    if isinstance(left, bool) or isinstance(right, bool):
        if not (isinstance(left, bool) and isinstance(right, bool)):
            raise Fallback("boolean compared with another type")
        return left == right
    if isinstance(left, int | Decimal | float) and isinstance(right, int | Decimal | float):
        return Decimal(str(left)) == Decimal(str(right))
    raise Fallback("values of these types are compared by fhirpathpy")


def _boolean(values: list[Any]) -> bool | None:
    value = _single(values)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise Fallback("a non-boolean in a logical expression")
    return value


def _reference_key(focus: list[Any], wanted: str | None) -> list[Any]:
    out = []
    for item in focus:
        ref = item.get("reference") if isinstance(item, dict) else None
        if not isinstance(ref, str):
            continue
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) < 2 or (wanted is not None and parts[-2] != wanted):
            continue
        out.append(parts[-1])
    return out


def _literal(node: dict[str, Any]) -> Fn:
    kind = node["type"]
    text = _ident(node)
    value: Any
    if kind == "StringLiteral":
        value = text[1:-1].replace("\\'", "'").replace('\\"', '"').replace("\\\\", "\\")
        if "\\" in value:
            raise _NotFast()
    elif kind == "NumberLiteral":
        value = Decimal(text) if "." in text else int(text)
    elif kind == "BooleanLiteral":
        value = text == "true"
    elif kind == "NullLiteral":
        return lambda focus, env: []
    else:
        raise _NotFast()
    constant = [value]
    return lambda focus, env: constant


class _Compiler:
    def expr(self, node: dict[str, Any]) -> Fn:
        kind = node.get("type")
        kids = _children(node)
        if kind == "TermExpression":
            return self.term(kids[0])
        if kind == "InvocationExpression":
            return self.invocation(kids[0], kids[1])
        if kind == "IndexerExpression":
            return self.indexer(kids[0], kids[1])
        if kind == "EqualityExpression":
            return self.equality(node, kids)
        if kind in ("AndExpression", "OrExpression"):
            return self.logic(node, kids)
        raise _NotFast()

    def term(self, node: dict[str, Any]) -> Fn:
        kind = node.get("type")
        kids = _children(node)
        if kind == "InvocationTerm":
            return self.start(kids[0])
        if kind == "LiteralTerm":
            return _literal(kids[0])
        if kind == "ParenthesizedTerm":
            return self.expr(kids[0])
        if kind == "ExternalConstantTerm":
            name = _ident(_children(kids[0])[0]).strip("'\"")
            if name in _RESERVED_VARS:
                raise _NotFast()

            def constant(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                value = env[name]
                if value is None:
                    return []
                return list(value) if isinstance(value, list) else [value]

            return constant
        raise _NotFast()

    def start(self, node: dict[str, Any]) -> Fn:
        kind = node.get("type")
        if kind == "ThisInvocation":
            return lambda focus, env: focus
        if kind == "MemberInvocation":
            name = _ident(_children(node)[0])
            if name[:1].isupper():
                return lambda focus, env: [x for x in focus if isinstance(x, dict)
                                           and x.get("resourceType") == name]
            return lambda focus, env: _step(focus, name)
        if kind == "FunctionInvocation":
            return self.function(lambda focus, env: focus, node)
        raise _NotFast()

    def invocation(self, left_node: dict[str, Any], right: dict[str, Any]) -> Fn:
        kind = right.get("type")
        if kind == "MemberInvocation":
            left = self.expr(left_node)
            name = _ident(_children(right)[0])
            return lambda focus, env: _step(left(focus, env), name)
        if kind == "FunctionInvocation":
            functn = _children(right)[0]
            fname = _ident(_children(functn)[0])
            if fname == "ofType":
                return self.of_type(left_node, functn)
            return self.function(self.expr(left_node), right)
        raise _NotFast()

    def of_type(self, left_node: dict[str, Any], functn: dict[str, Any]) -> Fn:
        """``m.ofType(T)`` on a choice element ``m``: the ``mT`` key."""
        params = _children(_children(functn)[1]) if len(_children(functn)) > 1 else []
        if len(params) != 1 or params[0].get("type") != "TermExpression":
            raise _NotFast()
        type_name = str(params[0].get("text", ""))
        if not re.fullmatch(r"[A-Za-z]+", type_name):
            raise _NotFast()
        kids = _children(left_node)
        if left_node.get("type") == "TermExpression" and \
                _children(kids[0])[0].get("type") == "MemberInvocation":
            parent: Fn = lambda focus, env: focus  # noqa: E731
            member = _ident(_children(_children(kids[0])[0])[0])
        elif left_node.get("type") == "InvocationExpression" and \
                kids[1].get("type") == "MemberInvocation":
            parent = self.expr(kids[0])
            member = _ident(_children(kids[1])[0])
        else:
            raise _NotFast()
        if member not in CHOICES:
            raise _NotFast()
        key = member + type_name[0].upper() + type_name[1:]

        def run(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
            items = parent(focus, env)
            if any(isinstance(x, dict) and member in x for x in items):
                raise Fallback(f"{member} is not a choice element here")
            return _step(items, key)

        return run

    def indexer(self, left_node: dict[str, Any], index_node: dict[str, Any]) -> Fn:
        left = self.expr(left_node)
        index = self.expr(index_node)

        def run(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
            at = _single(index(focus, env))
            if not isinstance(at, int) or isinstance(at, bool):
                raise Fallback("an index that is not an integer")
            items = left(focus, env)
            return [items[at]] if 0 <= at < len(items) else []

        return run

    def equality(self, node: dict[str, Any], kids: list[dict[str, Any]]) -> Fn:
        op = "".join(node.get("terminalNodeText", []))
        if op not in ("=", "!="):
            raise _NotFast()
        left, right = self.expr(kids[0]), self.expr(kids[1])
        negate = op == "!="

        def run(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            if not a or not b:
                return []
            if len(a) != 1 or len(b) != 1:
                raise Fallback("collections compared")
            return [_equal(a[0], b[0]) != negate]

        return run

    def logic(self, node: dict[str, Any], kids: list[dict[str, Any]]) -> Fn:
        op = "".join(node.get("terminalNodeText", []))
        if op not in ("and", "or"):
            raise _NotFast()
        left, right = self.expr(kids[0]), self.expr(kids[1])
        if op == "and":
            def run(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                a = _boolean(left(focus, env))
                if a is False:
                    return [False]
                b = _boolean(right(focus, env))
                if b is False:
                    return [False]
                return [True] if a and b else []
        else:
            def run(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                a = _boolean(left(focus, env))
                if a is True:
                    return [True]
                b = _boolean(right(focus, env))
                if b is True:
                    return [True]
                return [False] if a is False and b is False else []
        return run

    def function(self, source: Fn, node: dict[str, Any]) -> Fn:
        functn = _children(node)[0]
        parts = _children(functn)
        name = _ident(parts[0])
        params = _children(parts[1]) if len(parts) > 1 else []
        if name in ("first", "last", "exists", "empty", "not", "count", "getResourceKey",
                    "hasValue") and params and not (name == "exists" and len(params) == 1):
            raise _NotFast()
        if name == "first":
            return lambda focus, env: source(focus, env)[:1]
        if name == "last":
            return lambda focus, env: source(focus, env)[-1:]
        if name == "count":
            return lambda focus, env: [len(source(focus, env))]
        if name == "empty":
            return lambda focus, env: [not source(focus, env)]
        if name == "exists":
            if params:
                cond = self.expr(params[0])
                return lambda focus, env: [any(
                    _boolean(cond([x], env)) for x in source(focus, env))]
            return lambda focus, env: [bool(source(focus, env))]
        if name == "not":
            def negate(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                value = _boolean(source(focus, env))
                return [] if value is None else [not value]
            return negate
        if name == "where" and len(params) == 1:
            cond = self.expr(params[0])
            return lambda focus, env: [x for x in source(focus, env)
                                       if _boolean(cond([x], env)) is True]
        if name == "join" and len(params) <= 1:
            sep = self.expr(params[0]) if params else None

            def join(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                separator = _single(sep(focus, env)) if sep is not None else ""
                items = source(focus, env)
                if not all(isinstance(x, str) for x in items) or \
                        not isinstance(separator, str):
                    raise Fallback("join of non-strings")
                return [separator.join(items)]
            return join
        if name == "extension" and len(params) == 1:
            url = self.expr(params[0])

            def extension(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                wanted = _single(url(focus, env))
                return [e for x in source(focus, env) if isinstance(x, dict)
                        for e in x.get("extension", []) if isinstance(e, dict)
                        and e.get("url") == wanted]
            return extension
        if name in ("contains", "startsWith", "endsWith") and len(params) == 1:
            arg = self.expr(params[0])
            test: Callable[[str, str], bool] = {
                "contains": lambda a, b: b in a, "startsWith": str.startswith,
                "endsWith": str.endswith}[name]

            def string_test(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                text, sub = _single(source(focus, env)), _single(arg(focus, env))
                if text is None or sub is None:
                    return []
                if not isinstance(text, str) or not isinstance(sub, str):
                    raise Fallback("a string function on a non-string")
                return [test(text, sub)]
            return string_test
        if name in ("lower", "upper") and not params:
            def case(focus: list[Any], env: Mapping[str, Any]) -> list[Any]:
                text = _single(source(focus, env))
                if text is None:
                    return []
                if not isinstance(text, str):
                    raise Fallback("a string function on a non-string")
                return [text.lower() if name == "lower" else text.upper()]
            return case
        if name == "getResourceKey":
            return lambda focus, env: [x["id"] for x in source(focus, env)
                                       if isinstance(x, dict) and isinstance(x.get("id"), str)]
        if name == "getReferenceKey" and len(params) <= 1:
            wanted = None
            if params:
                if params[0].get("type") != "TermExpression":
                    raise _NotFast()
                wanted = str(params[0].get("text", ""))
            return lambda focus, env: _reference_key(source(focus, env), wanted)
        raise _NotFast()


def compile_fast(tree: dict[str, Any]) -> Fn | None:
    """The closure for an expression's syntax tree, or ``None`` outside the subset."""
    try:
        return _Compiler().expr(tree)
    except (_NotFast, IndexError, KeyError, ValueError, ArithmeticError):
        return None
