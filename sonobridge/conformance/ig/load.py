"""A FHIR NPM package's conformance resources into the server, through ``core.resources``
(the one write path: validated, indexed, access-checked, audited) as the caller given."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonobridge.core.errors import CoreError

if TYPE_CHECKING:
    from sonobridge.core.policy import Caller
    from sonobridge.core.resources import Resources

# What a package may put into the server (examples only when asked: they are clinical data).
CONFORMANCE_TYPES = frozenset({
    "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem",
    "SearchParameter", "OperationDefinition", "CapabilityStatement", "ImplementationGuide",
    "CompartmentDefinition", "Questionnaire", "Measure", "Library", "ActivityDefinition",
    "PlanDefinition", "StructureMap", "GraphDefinition", "MessageDefinition",
    "TerminologyCapabilities", "ExampleScenario", "EventDefinition", "ObservationDefinition",
    "SpecimenDefinition"})


# Not FHIR R4 resource types: in the package for other tools, never written to the store
# (the server answers ``ViewDefinition/$run`` on the shipped views itself).
PACKAGE_ONLY_TYPES = frozenset({"ViewDefinition"})


def is_topic(res: dict[str, Any]) -> bool:
    """A SubscriptionTopic carried as ``Basic`` (the Backport IG's R4 form): a conformance
    resource although Basic in general is not."""
    return res.get("resourceType") == "Basic" and any(
        c.get("code") == "SubscriptionTopic" for c in (res.get("code") or {}).get("coding", []))


def package_resources(path: Path, *, examples: bool = False) -> list[dict[str, Any]]:
    """The resources of a package tarball to load: those of ``package/`` named in its
    ``.index.json`` (or every resource file when it has none), conformance types only; with
    ``examples``, also those of ``package/example/``."""
    from sonobridge.conformance.ig.build import read_package

    files = read_package(path)
    if "package/package.json" not in files:
        raise ValueError(f"{path} is not a FHIR NPM package (no package/package.json)")
    out: list[dict[str, Any]] = []
    for folder, wanted in (("package/", CONFORMANCE_TYPES), ("package/example/", None)):
        if wanted is None and not examples:
            continue
        listed = files.get(f"{folder}.index.json")
        names = [f"{folder}{f['filename']}" for f in listed["files"]] if listed else sorted(
            n for n in files if n.startswith(folder) and "/" not in n[len(folder):]
            and not n.endswith(("package.json", ".index.json")))
        for name in names:
            res = files.get(name)
            if not isinstance(res, dict) or "resourceType" not in res or "id" not in res:
                continue
            if wanted is None or res["resourceType"] in wanted or is_topic(res):
                out.append(res)
    return out


@dataclass
class Loaded:
    """Counts by resource type of what was written, and what the server refused (why)."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)


def load_resources(resources: Resources, caller: Caller, items: list[dict[str, Any]]
                   ) -> Loaded:
    """Create or update each resource under its own id (one refused does not stop the rest)."""
    out = Loaded()
    for res in items:
        body = {k: v for k, v in res.items() if k != "meta"} if "meta" in res and \
            set(res["meta"]) <= {"versionId", "lastUpdated"} else res
        try:
            resources.update(caller, res["resourceType"], res["id"], body)
        except CoreError as exc:
            out.refused.append(f"{res['resourceType']}/{res['id']}: {exc}")
        else:
            out.counts[res["resourceType"]] += 1
    return out


def load_package(resources: Resources, caller: Caller, path: Path, *,
                 examples: bool = False) -> Loaded:
    return load_resources(resources, caller, package_resources(path, examples=examples))


def ensure_published(resources: Resources, caller: Caller) -> Loaded:
    """Put this version's guide (its conformance resources, without the CapabilityStatement,
    which ``/metadata`` serves live) into the store, each one written only when the stored one
    differs or is missing; so ``GET /fhir/ImplementationGuide/sonobridge``,
    ``/fhir/StructureDefinition?name=Sono…`` and the guide's ValueSets and CodeSystems answer
    on any server, a restart writes nothing, and a changed guide is published even when the
    version number did not move."""
    from sonobridge.conformance.ig.build import guide
    from sonobridge.jsonio import loads

    wanted = []
    for res in guide().conformance:
        if res["resourceType"] in PACKAGE_ONLY_TYPES:
            continue
        stored = resources.store.read(res["resourceType"], res["id"])
        if stored is not None and not stored.deleted and stored.content is not None:
            body = loads(stored.content)
            body.pop("meta", None)
            if body == res:
                continue
        wanted.append(res)
    return load_resources(resources, caller, wanted)
