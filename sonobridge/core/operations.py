"""FHIR operations (``$validate``, ``$evaluate-measure``, ``$run``…): a registry the domains fill.

An operation is a name, the levels it is invoked at (``system``: ``/fhir/$op``, ``type``:
``/fhir/Type/$op``, ``instance``: ``/fhir/Type/id/$op``), the resource types it applies to,
and a handler given an ``OperationCall``. The FHIR edge routes every ``$name`` URL here, so a
domain adds an operation by registering it (``Operations.register``) when the core is built —
no edge changes, and the CapabilityStatement lists what is registered.

Parameters arrive as the spec allows: a ``Parameters`` body (POST), query parameters (GET and
POST of a form), or, for operations that take one resource, the resource itself as the body.
``OperationCall.param`` and ``.resource_param`` read all three the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller
from sonobridge.store.resources import Writer

LEVELS = frozenset({"system", "type", "instance"})


@dataclass
class OperationCall:
    """One invocation, as the edge parsed it."""

    caller: Caller
    name: str  # without the "$"
    level: str  # system | type | instance
    method: str  # GET | POST
    res_type: str | None = None
    res_id: str | None = None
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # parsed JSON (a Parameters resource, or a resource), or None
    headers: dict[str, str] = field(default_factory=dict)
    writer: Writer | None = None

    @property
    def parameters(self) -> list[dict[str, Any]]:
        """The ``parameter`` entries of a Parameters body (empty for any other body)."""
        body = self.body
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            return [p for p in body.get("parameter", []) if isinstance(p, dict)]
        return []

    def params(self, name: str) -> list[Any]:
        """Every value of ``name``: query values (strings) then Parameters values (the
        ``value[x]``, or the ``resource``, or the part list)."""
        out: list[Any] = [v for k, v in self.query if k == name]
        for entry in self.parameters:
            if entry.get("name") != name:
                continue
            if "resource" in entry:
                out.append(entry["resource"])
            elif "part" in entry:
                out.append(entry["part"])
            else:
                out.extend(v for k, v in entry.items() if k.startswith("value"))
        return out

    def param(self, name: str, default: Any = None) -> Any:
        values = self.params(name)
        if len(values) > 1:
            raise CoreError(400, "invalid", f"${self.name}: parameter {name!r} is given "
                            f"{len(values)} times; it takes one value")
        return values[0] if values else default

    def resource_param(self, name: str = "resource") -> dict[str, Any] | None:
        """The resource an operation works on: the ``name`` parameter of a Parameters body,
        or the body itself when it is a resource other than Parameters."""
        value = self.param(name)
        if isinstance(value, dict):
            return value
        body = self.body
        if isinstance(body, dict) and body.get("resourceType") not in (None, "Parameters"):
            return body
        return None


@dataclass
class OperationResult:
    """What an operation answers: a FHIR resource (dict), or bytes with a content type
    (CSV, NDJSON, a CDA document…), and the status and extra headers."""

    body: dict[str, Any] | bytes | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # for bytes; FHIR formats are chosen by the edge


Handler = Callable[[OperationCall], OperationResult]


@dataclass(frozen=True)
class Operation:
    """A registered operation. ``types`` empty: any type (at the type/instance levels).
    ``affects_state`` operations are POST only; others answer GET too. ``definition`` is the
    canonical of its OperationDefinition, listed in the CapabilityStatement."""

    name: str
    levels: frozenset[str]
    handler: Handler
    types: frozenset[str] = frozenset()
    affects_state: bool = False
    definition: str | None = None
    documentation: str = ""

    def applies(self, level: str, res_type: str | None) -> bool:
        if level not in self.levels:
            return False
        return level == "system" or not self.types or res_type in self.types


class Operations:
    """The registry. Two operations may share a name if their levels/types do not overlap
    (``$validate`` on every type, ``$status`` only on Subscription)."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[Operation]] = {}

    def register(self, operation: Operation) -> None:
        if not operation.levels or not operation.levels <= LEVELS:
            raise ValueError(f"${operation.name}: levels must be among {sorted(LEVELS)}")
        self._by_name.setdefault(operation.name, []).append(operation)

    def find(self, name: str, level: str, res_type: str | None) -> Operation:
        """The operation for this URL, or the FHIR error a client can act on."""
        candidates = self._by_name.get(name, [])
        for op in candidates:
            if op.applies(level, res_type):
                return op
        if not candidates:
            raise CoreError(404, "not-supported", f"operation ${name} is not supported by "
                            "this server (see the CapabilityStatement for those that are)")
        where = {"system": "on the base URL", "type": f"on {res_type}",
                 "instance": f"on a {res_type} instance"}[level]
        raise CoreError(400, "not-supported", f"operation ${name} is not defined {where}")

    def all(self) -> list[Operation]:
        return [op for ops in self._by_name.values() for op in ops]

    def invoke(self, call: OperationCall) -> OperationResult:
        op = self.find(call.name, call.level, call.res_type)
        if call.method not in ("GET", "POST"):
            raise CoreError(405, "not-supported", f"${call.name} is invoked with GET or POST",
                            headers={"Allow": "POST" if op.affects_state else "GET, POST"})
        if op.affects_state and call.method != "POST":
            raise CoreError(405, "not-supported", f"${call.name} changes data: use POST",
                            headers={"Allow": "POST"})
        return op.handler(call)
