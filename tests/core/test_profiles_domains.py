"""The guide's profiles as the domains need them: a written consultation's appointment (a
reading slot) conforms beside the video session, a coded category needs no display, the
teaching case profile catches what ``$teaching-case`` must write, and the new extensions are
checked when a profile names them. Each rule is shown failing as well as passing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.build import guide
from sonobridge.conformance.ig.validate import issues
from sonobridge.core.profiles.registry import ProfileRegistry

TYPES = content.url("CodeSystem", "sono-consultation-type")


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    g = guide()
    return {sd["id"]: sd for sd in g.profiles()}, {e["id"]: e for e in g.examples}


def errors(instance: dict[str, Any], profile: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.code, (i.expression or [""])[0]) for i in issues(instance, profile)
            if i.severity in ("error", "fatal")]


def appointment(built: Any, kind: str, participants: int = 2) -> dict[str, Any]:
    appt = copy.deepcopy(built[1]["example-consultation-appointment"])
    appt["serviceType"] = [{"coding": [{"system": TYPES, "code": kind}]}]
    appt["participant"] = appt["participant"][:participants]
    return appt


def test_video_and_written_appointments_conform(built: Any) -> None:
    profile = built[0]["sono-consultation-appointment"]
    assert errors(appointment(built, "video"), profile) == []
    # a reading slot for a written consultation: the expert alone
    assert errors(appointment(built, "written", participants=1), profile) == []


@pytest.mark.parametrize(("kind", "participants", "expected"), [
    ("imaging", 2, [("invariant", "Appointment")]),        # neither video nor written
    ("video", 1, [("invariant", "Appointment")]),          # a video session has both sides
    ("written", 0, [("required", "Appointment.participant")]),  # (R4's 1..* as well)
])
def test_appointment_rules(built: Any, kind: str, participants: int,
                           expected: list[tuple[str, str]]) -> None:
    profile = built[0]["sono-consultation-appointment"]
    found = errors(appointment(built, kind, participants), profile)
    assert all(e in found for e in expected), found


def test_two_video_service_types_are_refused(built: Any) -> None:
    appt = appointment(built, "video")
    appt["serviceType"] *= 2
    assert ("structure", "Appointment.serviceType") in errors(
        appt, built[0]["sono-consultation-appointment"])


def test_category_patterns_need_no_display(built: Any) -> None:
    request = copy.deepcopy(built[1]["example-consultation-request"])
    request["category"] = [{"coding": [{"system": content.url(
        "CodeSystem", "sono-consultation-category"), "code": "remote-ultrasound"}]}]
    assert errors(request, built[0]["sono-consultation-request"]) == []
    request["category"][0]["coding"][0]["code"] = "other"
    assert errors(request, built[0]["sono-consultation-request"]) == [
        ("required", "ServiceRequest.category")]
    report = copy.deepcopy(built[1]["example-ultrasound-report"])
    report["category"] = [{"coding": [{"system": content.V2_0074, "code": "RUS"}]}]
    assert errors(report, built[0]["sono-ultrasound-report"]) == []


def test_teaching_case_example_conforms(built: Any) -> None:
    assert errors(built[1]["example-teaching-case"], built[0]["sono-teaching-case"]) == []


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["meta"].pop("security"), ("invariant", "DocumentReference")),
    (lambda d: d["content"][0]["attachment"].pop("url"), ("invariant", "DocumentReference")),
    (lambda d: d.update(type={"coding": [{"system": "http://loinc.org", "code": "18748-4"}]}),
     ("value", "DocumentReference.type")),
    (lambda d: d.pop("context"), ("required", "DocumentReference.context")),
    (lambda d: d.pop("description"), ("required", "DocumentReference.description")),
    (lambda d: d.update(status="superseded"), ("value", "DocumentReference.status")),
])
def test_teaching_case_rules(built: Any, change: Any, expected: tuple[str, str]) -> None:
    case = copy.deepcopy(built[1]["example-teaching-case"])
    change(case)
    assert expected in errors(case, built[0]["sono-teaching-case"])


def test_domain_extensions_are_checked_by_type() -> None:
    """A profile that slices in a domain extension gets its value type checked (the guide's
    extension definitions are what the validator reads)."""
    g = guide()
    late = content.url("StructureDefinition", "critical-value-late")
    comm_profile = next(sd for sd in g.profiles() if sd["id"] ==
                        "sono-critical-value-communication")
    profile = copy.deepcopy(comm_profile)
    profile["url"] = "http://example.org/fhir/StructureDefinition/late-flagged"
    profile["snapshot"]["element"] = [e for e in profile["snapshot"]["element"]
                                      if e["id"] != "Communication.extension"]
    profile["snapshot"]["element"][1:1] = [
        {"id": "Communication.extension", "path": "Communication.extension", "min": 0,
         "max": "*", "slicing": {"discriminator": [{"type": "value", "path": "url"}],
                                 "rules": "open"}},
        {"id": "Communication.extension:late", "path": "Communication.extension",
         "sliceName": "late", "min": 1, "max": "1",
         "type": [{"code": "Extension", "profile": [late]}]}]
    registry = ProfileRegistry()
    registry.add([r for r in g.conformance if r["resourceType"] in
                  ("StructureDefinition", "ValueSet", "CodeSystem")])
    registry.add([profile])
    example = next(e for e in g.examples if e["id"] == "example-critical-value")
    good = {**example, "extension": [{"url": late, "valueBoolean": False}]}
    bad = {**example, "extension": [{"url": late, "valueString": "no"}]}
    assert [i for i in registry.validate(good, profile["url"]) or []
            if i.severity == "error"] == []
    assert any(i.severity == "error" for i in registry.validate(bad, profile["url"]) or [])


def _slicing_profile(base_sd: dict[str, Any], res_type: str, url: str, ext_url: str
                     ) -> dict[str, Any]:
    """A throwaway profile on ``res_type`` requiring one extension ``ext_url``."""
    return {
        "resourceType": "StructureDefinition", "id": url.rsplit("/", 1)[-1], "url": url,
        "name": "Throwaway", "status": "active", "kind": "resource", "abstract": False,
        "type": res_type, "derivation": "constraint",
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
        "snapshot": {"element": [
            {"id": res_type, "path": res_type, "min": 0, "max": "*"},
            {"id": f"{res_type}.extension", "path": f"{res_type}.extension", "min": 0,
             "max": "*", "slicing": {"discriminator": [{"type": "value", "path": "url"}],
                                     "rules": "open"}},
            {"id": f"{res_type}.extension:it", "path": f"{res_type}.extension",
             "sliceName": "it", "min": 1, "max": "1",
             "type": [{"code": "Extension", "profile": [ext_url]}]}]}}


def test_the_workflows_provenance_matches_the_transition_extension(core: Any) -> None:
    """The Provenance the consultation workflow writes carries consultation-transition as the
    guide defines it (to 1..1, a Coding of the business states); a bad copy is caught."""
    from sonobridge.core.policy import Caller, Policy

    system = Caller(Policy.system("test-system"), "http://localhost/fhir")
    core.resources.update(system, "Patient", "p1", {"resourceType": "Patient", "id": "p1"})
    core.resources.update(system, "ServiceRequest", "sr1", {
        "resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}})
    states = content.url("CodeSystem", "sono-consultation-business-status")
    core.resources.update(system, "Task", "t1", {
        "resourceType": "Task", "id": "t1", "status": "draft", "intent": "order",
        "businessStatus": {"coding": [{"system": states, "code": "draft"}]},
        "basedOn": [{"reference": "ServiceRequest/sr1"}], "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-12-01T09:00:00+08:00",
        "requester": {"reference": "Practitioner/gp"}})
    from sonobridge.core.resources import SearchSpec
    from sonobridge.jsonio import dumps, loads

    found = core.resources.search(system, SearchSpec("Provenance", [("target", "Task/t1")]))
    provenance = loads(dumps(found.bundle))["entry"][0]["resource"]
    ext_url = content.url("StructureDefinition", "consultation-transition")
    assert [e["url"] for e in provenance["extension"]] == [ext_url]
    g = guide()
    profile = _slicing_profile(g.profiles()[0], "Provenance",
                               "http://example.org/fhir/StructureDefinition/p", ext_url)
    registry = ProfileRegistry()
    registry.add([r for r in g.conformance if r["resourceType"] in
                  ("StructureDefinition", "ValueSet", "CodeSystem")])
    registry.add([profile])

    def errors_of(body: dict[str, Any]) -> list[Any]:
        return [i for i in registry.validate(body, profile["url"]) or []
                if i.severity == "error"]

    assert errors_of(provenance) == []
    bad = copy.deepcopy(provenance)
    bad["extension"][0]["extension"] = [p for p in bad["extension"][0]["extension"]
                                        if p["url"] != "to"]
    assert errors_of(bad)
    bad = copy.deepcopy(provenance)
    bad["extension"][0]["extension"][-1]["valueCoding"]["code"] = "no-such-state"
    assert errors_of(bad)


def test_a_written_consultations_slot_is_stored_an_imaging_one_refused(client: Any) -> None:
    """Through the server's write path, claiming the profile: a written consultation's
    reading slot (one participant) is accepted; a service type of neither kind is 422."""
    appt = copy.deepcopy(next(e for e in guide().examples
                              if e["id"] == "example-consultation-appointment"))
    for ref in appt["basedOn"] + [p["actor"] for p in appt["participant"]]:
        kind, rid = ref["reference"].split("/")
        client.put(f"/fhir/{kind}/{rid}", json={"resourceType": kind, "id": rid, **(
            {"status": "active", "intent": "order", "subject": {"reference": "Patient/x"}}
            if kind == "ServiceRequest" else {})})
    client.put("/fhir/Patient/x", json={"resourceType": "Patient", "id": "x"})
    appt.pop("id")
    appt["serviceType"] = [{"coding": [{"system": TYPES, "code": "written"}]}]
    appt["participant"] = appt["participant"][1:]
    written = client.post("/fhir/Appointment", json=appt)
    assert written.status_code == 201, written.text
    appt["serviceType"][0]["coding"][0]["code"] = "imaging"
    refused = client.post("/fhir/Appointment", json=appt)
    assert refused.status_code == 422, refused.text
    issues_ = refused.json()["issue"]
    assert any("sono-appt-2" in (i.get("diagnostics") or "") or
               "Appointment" in (i.get("expression") or [""])[0] for i in issues_), issues_
