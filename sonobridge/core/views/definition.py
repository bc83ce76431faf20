"""A ViewDefinition (SQL on FHIR v2) checked and compiled into a tree of selections.

Everything that can be wrong with a view is found here, before a resource is read, and named
by its place in the ViewDefinition (``ViewDefinition.select[1].forEach``): a missing
``resource``, a column name that is not a database identifier or appears twice, ``unionAll``
branches whose columns differ in name or order, a constant without exactly one value, a
FHIRPath expression that does not parse, names an unknown constant or calls a function this
server does not implement (422, the function named). What can only be known from the data
(a ``where`` that is not boolean, several values in a column not marked ``collection``) is
reported by the runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.validation import known_types
from sonobridge.core.views.fhirpath import Expression, FhirPathError

COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Column types a view may declare (FHIR primitive type codes).
COLUMN_TYPES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
    "instant", "integer", "integer64", "markdown", "oid", "positiveInt", "string", "time",
    "unsignedInt", "uri", "url", "uuid",
})
SELECT_KEYS = frozenset({"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll",
                         "extension", "id"})


class ViewError(CoreError):
    """A view that cannot run: 422 with the path of the offending element (400 for a body
    that is not a ViewDefinition at all)."""

    def __init__(self, message: str, path: str, status: int = 422,
                 code: str = "processing") -> None:
        super().__init__(status, code, message, issues=[Issue(code, message,
                                                              expression=[path])])
        self.path = path


@dataclass
class Column:
    name: str
    expression: Expression
    collection: bool
    type: str | None
    path: str  # where it is in the ViewDefinition


@dataclass
class Select:
    columns: list[Column] = field(default_factory=list)
    selects: list[Select] = field(default_factory=list)
    union: list[Select] = field(default_factory=list)
    for_each: Expression | None = None
    or_null: bool = False
    repeat: list[Expression] = field(default_factory=list)
    path: str = ""

    def names(self) -> list[str]:
        """Column names in output order: own columns, nested selects, then unionAll."""
        out = [c.name for c in self.columns]
        for sub in self.selects:
            out += sub.names()
        if self.union:
            out += self.union[0].names()
        return out


@dataclass
class View:
    resource: str
    root: Select
    where: list[tuple[Expression, str]]
    constants: dict[str, Any]
    columns: list[str]
    name: str | None = None
    types: dict[str, str | None] = field(default_factory=dict)
    collections: frozenset[str] = frozenset()


def _constant_value(constant: Any, path: str) -> tuple[str, Any]:
    if not isinstance(constant, dict) or not isinstance(constant.get("name"), str):
        raise ViewError("a constant needs a name", f"{path}.name")
    name = constant["name"]
    if not COLUMN_NAME.match(name):
        raise ViewError(f"constant name {name!r} is not a valid name", f"{path}.name")
    values = [(k, v) for k, v in constant.items() if k.startswith("value")]
    if len(values) != 1:
        raise ViewError(f"constant {name!r} needs exactly one value[x] "
                        f"(has {len(values)})", path)
    value = values[0][1]
    if isinstance(value, float):
        value = Decimal(str(value))
    return name, value


class Compiler:
    def __init__(self, constants: frozenset[str]) -> None:
        self.constants = constants
        self.compiled: list[Expression] = []

    def expression(self, text: Any, path: str) -> Expression:
        if not isinstance(text, str) or not text.strip():
            raise ViewError("expected a FHIRPath expression (a non-empty string)", path)
        try:
            expression = Expression(text, self.constants)
        except FhirPathError as exc:
            message = str(exc)
            if exc.function is not None:
                message = (f"FHIRPath function {exc.function}() is not supported "
                           f"(in {text!r})")
            raise ViewError(message, path) from None
        self.compiled.append(expression)
        return expression

    def select(self, body: Any, path: str) -> Select:
        if not isinstance(body, dict):
            raise ViewError("a select is an object", path)
        unknown = set(body) - SELECT_KEYS
        if unknown:
            raise ViewError(f"unknown element(s) {sorted(unknown)} in a select",
                            f"{path}.{sorted(unknown)[0]}")
        out = Select(path=path)
        iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in body]
        if len(iterators) > 1:
            raise ViewError(f"a select takes one of forEach, forEachOrNull and repeat "
                            f"(has {', '.join(iterators)})", f"{path}.{iterators[1]}")
        if "forEach" in body:
            out.for_each = self.expression(body["forEach"], f"{path}.forEach")
        elif "forEachOrNull" in body:
            out.for_each = self.expression(body["forEachOrNull"], f"{path}.forEachOrNull")
            out.or_null = True
        elif "repeat" in body:
            paths = body["repeat"]
            if not isinstance(paths, list) or not paths:
                raise ViewError("repeat is a non-empty list of FHIRPath expressions",
                                f"{path}.repeat")
            out.repeat = [self.expression(p, f"{path}.repeat[{i}]")
                          for i, p in enumerate(paths)]
        for i, col in enumerate(self._list(body, "column", path)):
            out.columns.append(self.column(col, f"{path}.column[{i}]"))
        for i, sub in enumerate(self._list(body, "select", path)):
            out.selects.append(self.select(sub, f"{path}.select[{i}]"))
        for i, sub in enumerate(self._list(body, "unionAll", path)):
            out.union.append(self.select(sub, f"{path}.unionAll[{i}]"))
        if out.union:
            first = out.union[0].names()
            for i, branch in enumerate(out.union[1:], start=1):
                if branch.names() != first:
                    raise ViewError(f"unionAll branches must have the same columns in the "
                                    f"same order: {first} vs {branch.names()}",
                                    f"{path}.unionAll[{i}]")
        if not (out.columns or out.selects or out.union):
            raise ViewError("a select needs a column, select or unionAll", path)
        return out

    @staticmethod
    def _list(body: dict[str, Any], key: str, path: str) -> list[Any]:
        value = body.get(key, [])
        if not isinstance(value, list):
            raise ViewError(f"{key} is a list", f"{path}.{key}")
        return value

    def column(self, body: Any, path: str) -> Column:
        if not isinstance(body, dict):
            raise ViewError("a column is an object", path)
        name = body.get("name")
        if not isinstance(name, str) or not COLUMN_NAME.match(name):
            raise ViewError(f"column name {name!r} is not a database identifier "
                            "([A-Za-z][A-Za-z0-9_]*)", f"{path}.name")
        col_type = body.get("type")
        if col_type is not None and (not isinstance(col_type, str)
                                     or col_type not in COLUMN_TYPES):
            raise ViewError(f"column type {col_type!r} is not a FHIR primitive type",
                            f"{path}.type")
        collection = body.get("collection", False)
        if not isinstance(collection, bool):
            raise ViewError("collection is true or false", f"{path}.collection")
        return Column(name, self.expression(body.get("path"), f"{path}.path"), collection,
                      col_type, path)


def _types(select: Select, out: dict[str, str | None], collections: set[str]) -> None:
    for col in select.columns:
        out.setdefault(col.name, col.type)
        if col.collection:
            collections.add(col.name)
    for sub in select.selects + select.union:
        _types(sub, out, collections)


def compile_view(body: Any, *, fast: bool = True) -> View:
    """Check and compile a ViewDefinition resource (or its JSON as the tests give it). With
    ``fast``, the view runs on the compiled fast path when all its expressions allow it."""
    if not isinstance(body, dict):
        raise ViewError("a ViewDefinition is a JSON object", "ViewDefinition", status=400,
                        code="invalid")
    rt = body.get("resourceType")
    if rt is not None and rt != "ViewDefinition":
        raise ViewError(f"expected a ViewDefinition, got {rt}", "ViewDefinition.resourceType",
                        status=400, code="invalid")
    resource = body.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewError("the view names no resource type", "ViewDefinition.resource")
    if resource not in known_types():
        raise ViewError(f"{resource!r} is not a FHIR R4 resource type",
                        "ViewDefinition.resource")
    constants: dict[str, Any] = {}
    raw_constants = body.get("constant", [])
    if not isinstance(raw_constants, list):
        raise ViewError("constant is a list", "ViewDefinition.constant")
    for i, constant in enumerate(raw_constants):
        name, value = _constant_value(constant, f"ViewDefinition.constant[{i}]")
        constants[name] = value
    compiler = Compiler(frozenset(constants))
    selects = body.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewError("the view has no select", "ViewDefinition.select")
    root = Select(path="ViewDefinition")
    for i, sub in enumerate(selects):
        root.selects.append(compiler.select(sub, f"ViewDefinition.select[{i}]"))
    where = []
    raw_where = body.get("where", [])
    if not isinstance(raw_where, list):
        raise ViewError("where is a list", "ViewDefinition.where")
    for i, clause in enumerate(raw_where):
        path = f"ViewDefinition.where[{i}].path"
        text = clause.get("path") if isinstance(clause, dict) else None
        where.append((compiler.expression(text, path), path))
    columns = root.names()
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise ViewError(f"column name {name!r} is used twice", "ViewDefinition.select")
        seen.add(name)
    if fast and all(e.fast is not None for e in compiler.compiled):
        for expression in compiler.compiled:
            expression.use_fast = True
    types: dict[str, str | None] = {}
    collections: set[str] = set()
    _types(root, types, collections)
    view_name = body.get("name")
    return View(resource, root, where, constants, columns,
                view_name if isinstance(view_name, str) else None, types,
                frozenset(collections))
