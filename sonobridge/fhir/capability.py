"""The CapabilityStatement, built from the route table the FHIR app really serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sonobridge import __version__
from sonobridge.fhir.definitions import resource_types
from sonobridge.fhir.formats import FHIR_JSON, FHIR_XML, JSON_PATCH
from sonobridge.fhir.validation import has_model

# CapabilityStatement interaction codes by level (FHIR R4 restful-interaction).
TYPE_CODES = ("read", "vread", "update", "patch", "delete", "history-instance",
              "history-type", "create", "search-type")
SYSTEM_CODES = ("transaction", "batch", "search-system", "history-system")


def capability_statement(base: str, served: Iterable[str], published: str) -> dict[str, Any]:
    """``served``: the interaction codes the router has a handler for."""
    codes = set(served)
    type_codes = [c for c in TYPE_CODES if c in codes]
    system_codes = [c for c in SYSTEM_CODES if c in codes]
    resources = []
    for res_type in resource_types():
        entry: dict[str, Any] = {
            "type": res_type,
            "interaction": [{"code": c} for c in type_codes],
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalRead": "full-support",
        }
        if not has_model(res_type):
            entry["documentation"] = (
                "Accepted in JSON only and checked at the Resource level: this type has no "
                "structure model in the validator this server uses.")
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "id": "sonobridge",
        "url": f"{base}/metadata",
        "name": "SonoBridge",
        "title": "SonoBridge FHIR R4 server",
        "status": "active",
        "date": published,
        "publisher": "SonoBridge",
        "kind": "instance",
        "software": {"name": "SonoBridge", "version": __version__},
        "implementation": {"description": "SonoBridge remote ultrasound gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, FHIR_XML, "json", "xml"],
        "patchFormat": [JSON_PATCH, FHIR_JSON, FHIR_XML],
        "rest": [{
            "mode": "server",
            "documentation": "Every R4 resource type; resources are validated on every write.",
            "resource": resources,
            "interaction": [{"code": c} for c in system_codes],
        }],
    }
