"""Official FHIR R4 definition files shipped with the package (see README.md here)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@cache
def load(name: str) -> dict[str, Any]:
    """A definition file (each is one JSON object: a resource or a Bundle)."""
    definition: dict[str, Any] = json.loads((HERE / name).read_text("utf-8"))
    return definition


@cache
def resource_types() -> tuple[str, ...]:
    """All 145 R4 resource types, from the Patient compartment definition (it lists every type)."""
    compartment = load("compartmentdefinition-patient.json")
    return tuple(sorted(entry["code"] for entry in compartment["resource"]))
