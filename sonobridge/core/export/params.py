"""The kick-off request of a Bulk Data ``$export``, checked before a job is made.

FHIR Bulk Data Access v2 (https://hl7.org/fhir/uv/bulkdata/export.html): ``_outputFormat``
(NDJSON only), ``_since``, ``_type``, ``_typeFilter`` (a FHIR search per type), ``_elements``,
and for Group and Patient exports ``patient``. Everything is refused here with a 400 naming the
parameter, so that a job that is accepted can only fail for a reason outside the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sonobridge.core.errors import CoreError
from sonobridge.core.operations import OperationCall
from sonobridge.core.search.dates import parse_period
from sonobridge.core.validation import known_types

NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
_PARAMS = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient",
                     "includeAssociatedData", "organizeOutputBy", "_until"})
MAX_TYPE_FILTERS = 50


@dataclass
class ExportRequest:
    """What to export, as plain data (it is stored with the job and read back after a restart).

    ``level`` is system, patient or group; ``group`` the Group's id; ``patients`` the ids the
    export is confined to (Group members, or the ``patient`` parameter), ``None`` for all.
    """

    level: str
    url: str
    types: list[str] = field(default_factory=list)  # empty: every type the caller may read
    since: int | None = None  # microseconds
    since_text: str | None = None
    type_filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    elements: list[str] = field(default_factory=list)
    group: str | None = None
    patients: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "url": self.url, "types": self.types, "since": self.since,
                "since_text": self.since_text,
                "type_filters": {t: [[list(p) for p in q] for q in qs]
                                 for t, qs in self.type_filters.items()},
                "elements": self.elements, "group": self.group, "patients": self.patients}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(level=data["level"], url=data["url"], types=list(data["types"]),
                   since=data.get("since"), since_text=data.get("since_text"),
                   type_filters={t: [[(str(k), str(v)) for k, v in q] for q in qs]
                                 for t, qs in data.get("type_filters", {}).items()},
                   elements=list(data.get("elements", [])), group=data.get("group"),
                   patients=data.get("patients"))


def _split(values: list[Any], name: str) -> list[str]:
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise CoreError(400, "invalid", f"$export: {name} is a string", expression=[name])
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def parse_request(call: OperationCall, url: str, compartment: frozenset[str]
                  ) -> ExportRequest:
    """The kick-off's parameters (query or Parameters body), or a 400 naming the bad one.

    ``compartment`` is the set of types in a patient's compartment: a Patient or Group export
    only takes those."""
    for name in {k for k, _ in call.query} | {str(p.get("name")) for p in call.parameters}:
        if name not in _PARAMS:
            raise CoreError(400, "not-supported", f"$export does not take {name!r}",
                            expression=[name])
    for name in ("includeAssociatedData", "organizeOutputBy", "_until"):
        if call.params(name):
            raise CoreError(400, "not-supported", f"$export: {name} is not supported",
                            expression=[name])
    level = {"system": "system", "type": "patient", "instance": "group"}[call.level]
    fmt = call.param("_outputFormat")
    if fmt is not None and str(fmt) not in NDJSON_FORMATS:
        raise CoreError(400, "not-supported", f"$export: _outputFormat {fmt!r} is not "
                        "supported; this server writes application/fhir+ndjson",
                        expression=["_outputFormat"])
    known = known_types()
    allowed = known if level == "system" else compartment | {"Patient"}
    types = list(dict.fromkeys(_split(call.params("_type"), "_type")))
    for res_type in types:
        if res_type not in known:
            raise CoreError(400, "not-supported", f"$export: _type {res_type!r} is not a "
                            "FHIR R4 resource type", expression=["_type"])
        if res_type not in allowed:
            raise CoreError(400, "not-supported", f"$export: {res_type} is not in a patient's "
                            f"compartment, so a {level}-level export has none",
                            expression=["_type"])
    request = ExportRequest(level, url, types)
    since = call.param("_since")
    if since is not None:
        request.since = parse_period(str(since), "_since")[0]
        request.since_text = str(since)
    filters = call.params("_typeFilter")
    if len(filters) > MAX_TYPE_FILTERS:
        raise CoreError(400, "too-costly", f"$export: at most {MAX_TYPE_FILTERS} _typeFilter "
                        "values", expression=["_typeFilter"])
    for value in filters:
        if not isinstance(value, str) or "?" not in value:
            raise CoreError(400, "invalid", f"$export: _typeFilter {value!r} is not "
                            "Type?search-parameters", expression=["_typeFilter"])
        res_type, _, query = value.partition("?")
        if res_type not in known or (types and res_type not in types) or \
                res_type not in allowed:
            raise CoreError(400, "invalid", f"$export: _typeFilter names {res_type!r}, which "
                            "this export does not include", expression=["_typeFilter"])
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            raise CoreError(400, "invalid", f"$export: _typeFilter {value!r} has no search "
                            "parameters", expression=["_typeFilter"])
        request.type_filters.setdefault(res_type, []).append(pairs)
    for element in _split(call.params("_elements"), "_elements"):
        name = element.rsplit(".", 1)[-1]
        if not name.replace("_", "").isalnum():
            raise CoreError(400, "invalid", f"$export: _elements {element!r} is not an "
                            "element name", expression=["_elements"])
        request.elements.append(element)
    patients = call.params("patient")
    if patients:
        if level == "system":
            raise CoreError(400, "not-supported", "$export: patient is for Patient and Group "
                            "exports", expression=["patient"])
        ids = []
        for value in patients:
            ref = value.get("reference") if isinstance(value, dict) else value
            if not isinstance(ref, str) or not ref.startswith("Patient/"):
                raise CoreError(400, "invalid", "$export: patient is a Reference to a "
                                "Patient", expression=["patient"])
            ids.append(ref.removeprefix("Patient/"))
        request.patients = ids
    return request
