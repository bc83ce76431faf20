"""The rows a compiled view gives for one resource (SQL on FHIR v2, "processing algorithm").

For each resource that passes every ``where`` (a boolean, or empty = false; anything else
is an error), the root selection is evaluated: a selection iterates the nodes of its
``forEach``/``forEachOrNull``/``repeat`` (or just the current node), and for each node joins
(cartesian product) its own columns, the rows of its nested selects, and the concatenated
rows of its ``unionAll`` branches. ``forEachOrNull`` over nothing gives one row of nulls,
``forEach`` over nothing none. ``%rowIndex`` is the 0-based position of the node in the
collection its selection iterates (0 outside any iteration).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sonobridge.core.views.definition import Select, View, ViewError
from sonobridge.core.views.fhirpath import FhirPathError

Row = dict[str, Any]


def _nulls(select: Select) -> Row:
    return dict.fromkeys(select.names())


def _repeat(select: Select, node: Any, env: Mapping[str, Any], path: str) -> list[Any]:
    """Depth-first, pre-order: a node, then what the repeat paths reach from it."""
    out: list[Any] = []

    def walk(current: Any, depth: int) -> None:
        if depth > 64:
            raise ViewError("repeat goes deeper than 64 levels", f"{path}.repeat")
        for expr in select.repeat:
            for child in expr.evaluate(current, env):
                out.append(child)
                walk(child, depth + 1)

    walk(node, 0)
    return out


def _product(parts: list[list[Row]]) -> list[Row]:
    rows: list[Row] = [{}]
    for part in parts:
        if not part:
            return []
        rows = [{**left, **right} for left in rows for right in part]
    return rows


def select_rows(select: Select, node: Any, env: dict[str, Any]) -> list[Row]:
    try:
        if select.for_each is not None:
            nodes = select.for_each.evaluate(node, env)
        elif select.repeat:
            nodes = _repeat(select, node, env, select.path)
        else:
            nodes = None
    except FhirPathError as exc:
        where = "forEachOrNull" if select.or_null else "forEach" if select.for_each else \
            "repeat"
        raise ViewError(str(exc), f"{select.path}.{where}") from None
    if nodes is None:
        return _rows_for(select, node, env)
    out: list[Row] = []
    for index, item in enumerate(nodes):
        out.extend(_rows_for(select, item, {**env, "rowIndex": index}))
    if not nodes and select.or_null:
        # One row for "nothing here": its own columns read from the empty collection (so
        # %rowIndex is 0 and paths give null), the nested selections' columns null.
        null_row = _nulls(select)
        for col in select.columns:
            values = col.expression.values([], {**env, "rowIndex": 0})
            null_row[col.name] = values if col.collection else \
                values[0] if len(values) == 1 else None
        return [null_row]
    return out


def _rows_for(select: Select, node: Any, env: dict[str, Any]) -> list[Row]:
    parts: list[list[Row]] = []
    if select.columns:
        row: Row = {}
        for col in select.columns:
            try:
                values = col.expression.values(node, env)
            except FhirPathError as exc:
                raise ViewError(str(exc), f"{col.path}.path") from None
            if col.collection:
                row[col.name] = values
            elif len(values) > 1:
                raise ViewError(f"column {col.name!r} gives {len(values)} values for one "
                                "row; mark it collection: true or narrow the path",
                                f"{col.path}.path")
            else:
                row[col.name] = values[0] if values else None
        parts.append([row])
    for sub in select.selects:
        parts.append(select_rows(sub, node, env))
    if select.union:
        union: list[Row] = []
        for branch in select.union:
            union.extend(select_rows(branch, node, env))
        parts.append(union)
    return _product(parts)


def passes(view: View, resource: Any, env: dict[str, Any]) -> bool:
    for expr, path in view.where:
        try:
            result = expr.values(resource, env)
        except FhirPathError as exc:
            raise ViewError(str(exc), path) from None
        if not result:
            return False
        if len(result) != 1 or not isinstance(result[0], bool):
            raise ViewError(f"where {expr.text!r} must give a boolean, gave {result[:3]!r}",
                            path)
        if not result[0]:
            return False
    return True


def rows(view: View, resource: dict[str, Any]) -> Iterator[Row]:
    """The view's rows for one resource (nothing when it is of another type)."""
    if resource.get("resourceType") != view.resource:
        return
    env: dict[str, Any] = {**view.constants, "resource": resource,
                           "rootResource": resource, "rowIndex": 0}
    if not passes(view, resource, env):
        return
    for row in select_rows(view.root, resource, env):
        yield {name: row.get(name) for name in view.columns}


