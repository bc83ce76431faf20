"""The CapabilityStatement, built from the route table the FHIR app really serves and the search
parameters the registry really indexes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sonobridge import __version__
from sonobridge.core.definitions import resource_types
from sonobridge.core.operations import Operation
from sonobridge.core.profiles import registry_for
from sonobridge.core.search.params import MODIFIERS
from sonobridge.core.validation import has_model

if TYPE_CHECKING:
    from sonobridge.core.search.engine import SearchEngine

# CapabilityStatement interaction codes by level (FHIR R4 restful-interaction).
TYPE_CODES = ("read", "vread", "update", "patch", "delete", "history-instance",
              "history-type", "create", "search-type")
SYSTEM_CODES = ("transaction", "batch", "search-system", "history-system")
COMMON = [
    {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
    {"name": "_lastUpdated", "type": "date",
     "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
    {"name": "_list", "type": "special", "documentation": "List/[id] whose entries to search"},
    {"name": "_has", "type": "special", "documentation": "reverse chaining, nested"},
]


def _search_block(engine: SearchEngine, res_type: str, revincludes: dict[str, list[str]]
                  ) -> dict[str, Any]:
    params = []
    includes = []
    for code, param in sorted(engine.registry.params(res_type).items()):
        if not param.indexed:
            continue
        modifiers = sorted(MODIFIERS.get(param.type, set()))
        if param.type == "reference":
            modifiers.append("[type]")
            includes.append(f"{res_type}:{code}")
        doc = f"modifiers: {', '.join(':' + m for m in modifiers)}"
        if param.type in ("date", "number", "quantity"):
            doc += "; prefixes: eq ne gt lt ge le sa eb ap"
        if param.type == "reference":
            doc += "; chaining"
        params.append({"name": code, "definition": param.url, "type": param.type,
                       "documentation": doc})
    return {
        "searchInclude": ["*", *includes],
        "searchRevInclude": sorted(revincludes.get(res_type, [])),
        "searchParam": [*COMMON, *params],
    }


def _revincludes(engine: SearchEngine) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    everything = resource_types()
    for source in everything:
        for code, param in engine.registry.params(source).items():
            if param.type != "reference" or not param.indexed:
                continue
            for target in param.targets or ():
                targets = everything if target == "Resource" else [target]
                for res_type in targets:
                    out.setdefault(res_type, []).append(f"{source}:{code}")
    return out


OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def security(base: str) -> dict[str, Any]:
    """``rest.security``: SMART on FHIR, with the OAuth endpoints in the ``oauth-uris``
    extension (some clients look only there, not at .well-known/smart-configuration)."""
    root = base[: -len("/fhir")] if base.endswith("/fhir") else base
    uris = [("authorize", "/auth/authorize"), ("token", "/auth/token"),
            ("introspect", "/auth/introspect"), ("revoke", "/auth/revoke"),
            ("register", "/auth/register")]
    return {
        "cors": True,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}], "text": "OAuth 2 using SMART-on-FHIR profile"}],
        "description": "SMART App Launch 2.2 and Backend Services: one bearer token for FHIR "
                       "and DICOMweb. Discovery: .well-known/smart-configuration.",
        "extension": [{"url": OAUTH_URIS, "extension": [
            {"url": name, "valueUri": f"{root}{path}"} for name, path in uris]}],
    }


def _operation_entry(op: Operation) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": op.name, "definition": op.definition or
                             f"urn:sonobridge:operation:{op.name}"}
    if op.documentation:
        entry["documentation"] = op.documentation
    return entry


def capability_statement(base: str, served: Iterable[str], published: str,
                         engine: SearchEngine | None = None, secured: bool = True, *,
                         formats: Sequence[str] = ("application/fhir+json", "json"),
                         patch_formats: Sequence[str] = (),
                         operations: Iterable[Operation] = (),
                         supported_profiles: Mapping[str, Sequence[str]] | None = None
                         ) -> dict[str, Any]:
    """``served``: the interaction codes the router has a handler for; ``formats`` and
    ``patch_formats``: the media types it reads and writes (the FHIR edge says which).
    ``supported_profiles`` (type -> canonicals) defaults to the profiles the core whose
    search ``engine`` this is holds (its profile registry: the guide's and the stored ones),
    each listed in ``rest.resource.supportedProfile`` of its type."""
    codes = set(served)
    if supported_profiles is None:
        registry = registry_for(engine) if engine is not None else None
        supported_profiles = registry.supported_profiles() if registry is not None else {}
    registered = sorted(operations, key=lambda op: op.name)
    type_codes = [c for c in TYPE_CODES if c in codes]
    system_codes = [c for c in SYSTEM_CODES if c in codes]
    revincludes = _revincludes(engine) if engine is not None else {}
    resources = []
    for res_type in resource_types():
        entry: dict[str, Any] = {
            "type": res_type,
            "interaction": [{"code": c} for c in type_codes],
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalCreate": "create" in codes and engine is not None,
            "conditionalRead": "full-support",
            "conditionalUpdate": "conditional-update" in codes,
            "conditionalDelete": "multiple" if "conditional-delete" in codes else "not-supported",
            "referencePolicy": ["literal", "logical", "local"],
        }
        if supported_profiles.get(res_type):
            entry["supportedProfile"] = list(supported_profiles[res_type])
        if not has_model(res_type):
            entry["documentation"] = (
                "Accepted in JSON only and checked at the Resource level: this type has no "
                "structure model in the validator this server uses.")
        if engine is not None and "search-type" in codes:
            entry.update(_search_block(engine, res_type, revincludes))
        ops = []
        if res_type == "Patient" and "everything" in codes:
            ops.append({"name": "everything", "definition":
                        "http://hl7.org/fhir/OperationDefinition/Patient-everything"})
        ops += [_operation_entry(op) for op in registered
                if op.levels & {"type", "instance"} and (not op.types or res_type in op.types)]
        if ops:
            entry["operation"] = ops
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Every R4 resource type; resources are validated on every write.",
        "resource": resources,
        "interaction": [{"code": c} for c in system_codes],
    }
    system_ops = [_operation_entry(op) for op in registered if "system" in op.levels]
    if "reindex" in codes:
        system_ops.insert(0, {"name": "reindex", "definition":
                              "http://hl7.org/fhir/OperationDefinition/Resource-reindex"})
    if system_ops:
        rest["operation"] = system_ops
    if engine is not None:
        rest["searchParam"] = COMMON[:2]
    if secured:
        rest["security"] = security(base)
    guides = _guides(supported_profiles)
    statement: dict[str, Any] = {
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
        "format": list(formats),
        "patchFormat": list(patch_formats),
        "rest": [rest],
    }
    if guides:
        statement["implementationGuide"] = guides
    return statement


def _guides(supported_profiles: Mapping[str, Sequence[str]]) -> list[str]:
    """The implementation guide whose profiles the server supports (ours, when they are)."""
    from sonobridge.conformance.ig.content import CANONICAL, IG_ID, url

    ours = any(p.startswith(CANONICAL + "/") for urls in supported_profiles.values()
               for p in urls)
    return [url("ImplementationGuide", IG_ID)] if ours else []
