"""The implementation guide as a FHIR NPM package (``package.tgz``).

Layout (FHIR NPM package spec, as the IG Publisher writes and ``fhir-package-loader`` reads)::

    package/package.json        name, version, canonical, fhirVersions, dependencies, type "IG"
    package/.index.json         index-version 1: filename, resourceType, id, url, version, kind,
                                type
    package/<Type>-<id>.json    every conformance resource (profiles with snapshot + differential)
    package/example/…           the examples, with their own .index.json

The tarball is reproducible: entries sorted, fixed mtime, no owner names.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sonobridge import __version__
from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.snapshot import apply_differential
from sonobridge.core.search.registry import guide_search_parameters

FHIR_VERSION = "4.0.1"
HL7_SD = "http://hl7.org/fhir/StructureDefinition/"
MTIME = 1_764_720_000  # 2025-12-03, any fixed instant: the same input gives the same bytes


@dataclass
class Guide:
    """Everything the package holds, as resources."""

    conformance: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def profiles(self) -> list[dict[str, Any]]:
        return [r for r in self.conformance if r["resourceType"] == "StructureDefinition"]

    def by_url(self) -> dict[str, dict[str, Any]]:
        return {r["url"]: r for r in self.conformance if "url" in r}

    def codes_of(self, valueset_url: str) -> set[str] | None:
        """The codes of one of the guide's value sets (each includes one whole code system)."""
        vs = self.by_url().get(valueset_url)
        if vs is None:
            return None
        codes: set[str] = set()
        for include in vs.get("compose", {}).get("include", []):
            cs = self.by_url().get(include.get("system", ""))
            if cs is None:
                return None
            codes.update(c["code"] for c in cs.get("concept", []))
        return codes


def structure_definition(spec: dict[str, Any]) -> dict[str, Any]:
    base_type = spec["type"]
    differential = [copy.deepcopy(e) for e in spec["differential"]]
    sd = {
        "resourceType": "StructureDefinition", "id": spec["id"],
        "url": content.url("StructureDefinition", spec["id"]), "version": __version__,
        "name": spec["name"], "title": spec["title"], "status": "active",
        "experimental": False, "date": content.DATE, "publisher": content.PUBLISHER,
        "description": spec["description"], "fhirVersion": FHIR_VERSION,
        "kind": "resource", "abstract": False, "type": base_type,
        "baseDefinition": HL7_SD + base_type, "derivation": "constraint",
        "snapshot": {"element": apply_differential(base_type, differential)},
        "differential": {"element": differential if differential and
                         differential[0]["id"] == base_type else
                         [{"id": base_type, "path": base_type}, *differential]},
    }
    sd["snapshot"]["element"][0]["definition"] = spec["description"]
    return sd


def extension_definition(spec: dict[str, Any]) -> dict[str, Any]:
    """A simple extension (one ``value[x]`` of one type, no nested extensions): the
    StructureDefinition with its snapshot written out (the base Extension's five elements
    with the constraints laid over them), so a validator needs nothing else to check it."""
    ext_url = content.url("StructureDefinition", spec["id"])
    value: dict[str, Any] = {"id": "Extension.value[x]", "path": "Extension.value[x]",
                             "short": spec["title"], "min": 1, "max": "1",
                             "type": [{"code": spec["value"]}]}
    if spec.get("binding"):
        value["binding"] = copy.deepcopy(spec["binding"])
    differential: list[dict[str, Any]] = [
        {"id": "Extension", "path": "Extension", "short": spec["title"],
         "definition": spec["description"]},
        {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": ext_url},
        value,
    ]
    base: list[dict[str, Any]] = [
        {"id": "Extension", "path": "Extension", "short": "Optional Extensions Element",
         "definition": "Optional Extension Element - found in all resources.",
         "min": 0, "max": "*"},
        {"id": "Extension.id", "path": "Extension.id", "short": "Unique id for inter-element "
         "referencing", "definition": "Unique id for the element within a resource.",
         "min": 0, "max": "1", "type": [{"code": "http://hl7.org/fhirpath/System.String"}]},
        {"id": "Extension.extension", "path": "Extension.extension",
         "short": "Additional content defined by implementations",
         "definition": "May be used to represent additional information.", "min": 0,
         "max": "*", "type": [{"code": "Extension"}]},
        {"id": "Extension.url", "path": "Extension.url", "short": "identifies the meaning of "
         "the extension", "definition": "Source of the definition for the extension code.",
         "min": 1, "max": "1", "type": [{"code": "uri"}]},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "short": "Value of "
         "extension", "definition": "Value of extension.", "min": 0, "max": "1",
         "type": [{"code": spec["value"]}]},
    ]
    snapshot = []
    for element in base:
        element["base"] = {"path": element["path"], "min": element["min"],
                           "max": element["max"]}
        element["isModifier"] = False
        for diff in differential:
            if diff["id"] == element["id"]:
                element.update({k: copy.deepcopy(v) for k, v in diff.items()})
        snapshot.append(element)
    return {
        "resourceType": "StructureDefinition", "id": spec["id"], "url": ext_url,
        "version": __version__, "name": spec["name"], "title": spec["title"],
        "status": "active", "experimental": False, "date": content.DATE,
        "publisher": content.PUBLISHER, "description": spec["description"],
        "fhirVersion": FHIR_VERSION, "kind": "complex-type", "abstract": False,
        "context": [{"type": "element", "expression": t} for t in spec["context"]],
        "type": "Extension", "baseDefinition": HL7_SD + "Extension",
        "derivation": "constraint", "snapshot": {"element": snapshot},
        "differential": {"element": differential},
    }


def implementation_guide(resources: list[dict[str, Any]], examples: list[dict[str, Any]]
                         ) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    entry: dict[str, Any]
    for res in resources:
        entry = {"reference": {"reference": f"{res['resourceType']}/{res['id']}"},
                 "name": res.get("title") or res.get("name") or res["id"],
                 "exampleBoolean": False}
        if res.get("description"):
            entry["description"] = res["description"]
        entries.append(entry)
    for ex in examples:
        entry = {"reference": {"reference": f"{ex['resourceType']}/{ex['id']}"},
                 "name": f"Example {ex['resourceType']}/{ex['id']}"}
        profiles = ex.get("meta", {}).get("profile", [])
        if profiles:
            entry["exampleCanonical"] = profiles[0]
        else:
            entry["exampleBoolean"] = True
        entries.append(entry)
    return {
        "resourceType": "ImplementationGuide", "id": content.IG_ID,
        "url": content.url("ImplementationGuide", content.IG_ID), "version": __version__,
        "name": "SonoBridge", "title": "SonoBridge 远程超声实施指南 Remote ultrasound "
                                       "implementation guide",
        "status": "active", "experimental": False, "date": content.DATE,
        "publisher": content.PUBLISHER,
        "description": "Profiles, terminology, search parameters and examples of the SonoBridge "
                       "remote ultrasound gateway (FHIR R4): consultation, ultrasound reports "
                       "and measurements, critical values, quality control (questionnaires, "
                       "measures, views), teaching cases, WS/T 500 documents, subscription "
                       "topics.",
        "packageId": content.PACKAGE_NAME, "license": "CC0-1.0",
        "fhirVersion": [FHIR_VERSION],
        "definition": {"resource": entries},
    }


def with_profiles(capability: dict[str, Any], profiles: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    """A copy of ``capability`` whose resources list the guide's profiles as
    ``supportedProfile`` (the package's statement says what a conforming server supports)."""
    out = copy.deepcopy(capability)
    by_type: dict[str, list[str]] = {}
    for spec in profiles:
        by_type.setdefault(spec["type"], []).append(
            content.url("StructureDefinition", spec["id"]))
    for rest in out.get("rest", []):
        for entry in rest.get("resource", []):
            wanted = by_type.get(entry.get("type", ""), [])
            held = entry.get("supportedProfile", [])
            if wanted:
                entry["supportedProfile"] = [*held, *(u for u in wanted if u not in held)]
    if by_type:
        out["implementationGuide"] = [content.url("ImplementationGuide", content.IG_ID)]
    return out


def all_profiles() -> list[dict[str, Any]]:
    """The resource profiles (``content.PROFILES`` holds the domains' too)."""
    return list(content.PROFILES)


def guide(capability: dict[str, Any] | None = None) -> Guide:
    """The guide's resources (the CapabilityStatement, if given, goes in as it is)."""
    from sonobridge.conformance.ig import domains

    profiles = all_profiles()
    resources: list[dict[str, Any]] = [structure_definition(p) for p in profiles]
    resources += [extension_definition(e) for e in content.EXTENSIONS]
    resources.append(domains.transition_extension())
    resources += content.value_sets()
    resources.append(domains.document_formats())
    resources += content.code_systems()
    resources += domains.naming_systems()
    resources += domains.operations()
    resources += domains.qc_resources()
    resources += domains.subscription_topics()
    for entry in guide_search_parameters()["entry"]:
        param = copy.deepcopy(entry["resource"])
        param.setdefault("version", __version__)
        resources.append(param)
    if capability is not None:
        resources.append(with_profiles(capability, profiles))
    resources += domains.view_definitions()
    examples = content.examples()
    resources.append(implementation_guide(resources, examples))
    return Guide(resources, examples)


@cache
def definitions() -> tuple[dict[str, Any], ...]:
    """The guide's StructureDefinitions, ValueSets and CodeSystems, built once per process
    (the core's profile registry holds them; callers must not change them)."""
    return tuple(r for r in guide().conformance
                 if r["resourceType"] in ("StructureDefinition", "ValueSet", "CodeSystem"))


def package_json() -> dict[str, Any]:
    return {
        "name": content.PACKAGE_NAME, "version": __version__,
        "description": "SonoBridge remote ultrasound implementation guide (FHIR R4)",
        "author": content.PUBLISHER, "license": "CC0-1.0", "canonical": content.CANONICAL,
        "url": content.CANONICAL, "fhirVersions": [FHIR_VERSION], "type": "IG",
        "title": "SonoBridge 远程超声实施指南", "jurisdiction": "urn:iso:std:iso:3166#CN",
        "dependencies": {"hl7.fhir.r4.core": FHIR_VERSION},
    }


def filename(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def index_entry(resource: dict[str, Any]) -> dict[str, Any]:
    entry = {"filename": filename(resource), "resourceType": resource["resourceType"],
             "id": resource["id"]}
    for key in ("url", "version", "kind", "type"):
        if isinstance(resource.get(key), str):
            entry[key] = resource[key]
    return entry


def index(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"index-version": 1, "files": [index_entry(r) for r in resources]}


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8")


def package_files(g: Guide) -> dict[str, bytes]:
    """Archive path -> bytes."""
    files = {"package/package.json": _dump(package_json()),
             "package/.index.json": _dump(index(g.conformance)),
             "package/example/.index.json": _dump(index(g.examples))}
    for res in g.conformance:
        files[f"package/{filename(res)}"] = _dump(res)
    for res in g.examples:
        files[f"package/example/{filename(res)}"] = _dump(res)
    return files


def write_package(g: Guide, path: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(package_files(g).items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=MTIME,
                                               filename="") as gz:
        gz.write(raw.getvalue())
    return path


def read_package(path: Path) -> dict[str, Any]:
    """Archive path -> parsed JSON, for every ``.json`` file of a package tarball."""
    out: dict[str, Any] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                out[member.name] = json.loads(handle.read().decode("utf-8"))
    return out


def build(out_dir: Path, capability: dict[str, Any] | None = None, *, site: bool = True
          ) -> Guide:
    """Write ``out_dir/package.tgz`` (and ``out_dir/site/``)."""
    g = guide(capability)
    write_package(g, out_dir / "package.tgz")
    if site:
        from sonobridge.conformance.ig.site import write_site

        write_site(g, out_dir / "site")
    return g
