"""The profiles suite: does a server publish and enforce the SonoBridge implementation guide?

For a platform that claims the guide (or SonoBridge itself): the CapabilityStatement lists the
guide's profiles as ``supportedProfile`` of their types; each profile, extension, value set and
code system is readable by canonical; ``$validate`` accepts each of the guide's examples and
finds the missing element in a broken copy of each consultation profile's example (naming its
FHIRPath); a create of a broken consultation request that claims the profile is refused with
422. Nothing is stored: the only write is refused, and one that was not is deleted at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

from sonobridge.conformance.ig import content
from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, R4, base
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import Check, Context, Group, Requirement, Suite
from sonobridge.conformance.kit.model import TestDef as T

GUIDE = f"{content.CANONICAL}/ImplementationGuide/{content.IG_ID}"
# (example id, the element a broken copy lacks, the FHIRPath the outcome must name)
BROKEN = [("example-consultation-request", "identifier", "ServiceRequest.identifier"),
          ("example-consultation-task", "businessStatus", "Task.businessStatus"),
          ("example-consultation-appointment", "start", "Appointment.start")]


def _examples() -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in content.examples()}


def _outcome(check: Check, response: Any, what: str) -> list[dict[str, Any]]:
    body = json_body(response, what)
    check.expect(isinstance(body, dict) and body.get("resourceType") == "OperationOutcome",
                 f"{what} is an OperationOutcome")
    issues: list[dict[str, Any]] = body.get("issue", [])
    return issues


def _errors(issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in issues if i.get("severity") in ("error", "fatal")]


def supported_profiles(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    cap = json_body(response, "the CapabilityStatement")
    rest = [r for r in cap.get("rest", []) if r.get("mode") == "server"]
    declared = {r.get("type"): r for r in (rest[0].get("resource", []) if rest else [])}
    missing = []
    for spec in content.PROFILES:
        url = content.url("StructureDefinition", spec["id"])
        if url not in declared.get(spec["type"], {}).get("supportedProfile", []):
            missing.append(f"{spec['type']}: {spec['name']}")
    check.expect(not missing, f"supportedProfile lacks {', '.join(missing)}")


def _by_url(check: Check, kind: str, url: str) -> dict[str, Any]:
    response = check.http.get(f"{base(check.ctx)}/{kind}", params={"url": url},
                              headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    bundle = json_body(response, f"the {kind} search")
    found = [e.get("resource", {}) for e in bundle.get("entry", [])
             if e.get("resource", {}).get("url") == url]
    check.expect(len(found) == 1, f"{kind}?url={url} finds it once; found {len(found)}")
    return dict(found[0])


def published(check: Check) -> None:
    for spec in [*content.PROFILES, *content.EXTENSIONS]:
        sd = _by_url(check, "StructureDefinition", content.url("StructureDefinition",
                                                               spec["id"]))
        check.expect(sd.get("name") == spec["name"], f"{spec['id']} is named {spec['name']}")
        check.expect(sd.get("snapshot", {}).get("element"), f"{spec['id']} has a snapshot")


def terminology(check: Check) -> None:
    for rid, _, _, _, concepts in content.TERMINOLOGY:
        _by_url(check, "ValueSet", content.url("ValueSet", rid))
        cs = _by_url(check, "CodeSystem", content.url("CodeSystem", rid))
        held = {c.get("code"): c for c in cs.get("concept", [])}
        for code, zh, en in concepts:
            concept = held.get(code)
            check.expect(concept is not None, f"CodeSystem {rid} has {code}")
            assert concept is not None
            check.expect(concept.get("display") == zh, f"{rid}#{code} displays {zh}")
            check.expect({"language": "en", "value": en} in concept.get("designation", []),
                         f"{rid}#{code} has the English designation {en!r}")


def validate_example(example_id: str) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        example = _examples()[example_id]
        response = check.http.post(f"{base(check.ctx)}/{example['resourceType']}/$validate",
                                   content=json.dumps(example, ensure_ascii=False),
                                   headers=HEADERS)
        expect_status(response, 200, what="$validate")
        errors = _errors(_outcome(check, response, "the $validate answer"))
        check.expect(not errors, "no errors; got " + "; ".join(
            str(e.get("diagnostics")) for e in errors)[:400])
    return run


def validate_broken(example_id: str, element: str, path: str) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        broken = copy.deepcopy(_examples()[example_id])
        del broken[element]
        response = check.http.post(f"{base(check.ctx)}/{broken['resourceType']}/$validate",
                                   content=json.dumps(broken, ensure_ascii=False),
                                   headers=HEADERS)
        expect_status(response, 200, what="$validate of an invalid resource (200: the "
                                          "operation succeeded)")
        errors = _errors(_outcome(check, response, "the $validate answer"))
        paths = [p for e in errors for p in e.get("expression", [])]
        check.expect(path in paths, f"an error names {path}; got {paths}")
    return run


def refused_on_write(check: Check) -> None:
    broken = copy.deepcopy(_examples()["example-consultation-request"])
    del broken["id"]
    del broken["identifier"]
    response = check.http.post(f"{base(check.ctx)}/ServiceRequest",
                               content=json.dumps(broken, ensure_ascii=False), headers=HEADERS)
    if response.status_code in (200, 201):
        location = response.headers.get("location", "")
        if location:
            check.http.delete(location.split("/_history")[0])
    expect_status(response, 422, what="a create of a non-conforming profiled resource")
    paths = [p for e in _errors(_outcome(check, response, "the refusal"))
             for p in e.get("expression", [])]
    check.expect("ServiceRequest.identifier" in paths,
                 f"the outcome names ServiceRequest.identifier; got {paths}")


def _requirement(text: str, page: str) -> Requirement:
    return Requirement(text, f"{R4}/{page}")


def tests(ctx: Context) -> list[T]:
    base(ctx)
    out = [
        T("profiles-cap-01", "supportedProfile lists the guide's profiles", _requirement(
            "A server that supports profiles lists them in rest.resource.supportedProfile.",
            "capabilitystatement-definitions.html#CapabilityStatement.rest.resource."
            "supportedProfile"), supported_profiles),
        T("profiles-pub-01", "profiles and extensions readable by canonical", _requirement(
            "Conformance resources are found by their canonical url.",
            "resource.html#canonical"), published),
        T("profiles-pub-02", "value sets and code systems (zh display, en designation)",
          _requirement("The guide's terminology is published with Chinese displays and "
                       "English designations (issue 13).", "codesystem.html"), terminology),
    ]
    for example_id in sorted(_examples()):
        example = _examples()[example_id]
        if not example.get("meta", {}).get("profile"):
            continue
        out.append(T(f"profiles-validate-{example_id}", f"$validate accepts {example_id}",
                     _requirement("$validate answers an OperationOutcome without errors for "
                                  "a conforming resource.", "resource-operation-validate.html"),
                     validate_example(example_id)))
    for example_id, element, path in BROKEN:
        out.append(T(f"profiles-broken-{example_id}", f"$validate finds {path} missing",
                     _requirement("$validate answers 200 with the errors, each located.",
                                  "resource-operation-validate.html"),
                     validate_broken(example_id, element, path)))
    out.append(T("profiles-write-01", "a non-conforming profiled create is refused (422)",
                 _requirement("A server that enforces the profiles a resource claims refuses "
                              "it with 422 and an OperationOutcome.",
                              "http.html#create"), refused_on_write))
    return out


def groups(ctx: Context) -> Iterable[Group]:
    return [Group("profiles", f"Implementation guide {GUIDE}", tests)]


SUITE = Suite("profiles", "Profiles and validation (SonoBridge IG)", groups)
