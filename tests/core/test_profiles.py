"""The core's profile registry and validator: definitions held in the store (and kept fresh),
profiles loaded from a package by `sonobridge ig load`, value sets from the store, and each rule
of the validator on a small hand-written profile."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.config import Settings
from sonobridge.core.errors import CoreError
from sonobridge.core.profiles import registry as registry_module
from sonobridge.core.profiles import registry_of
from sonobridge.core.profiles.registry import ProfileRegistry
from sonobridge.core.profiles.terminology import expand
from sonobridge.core.services import Core, open_core

BASE = "http://example.org/fhir"
PROFILE = f"{BASE}/StructureDefinition/adult-patient"
VS = f"{BASE}/ValueSet/colours"
CS = f"{BASE}/CodeSystem/colours"
EXT = f"{BASE}/StructureDefinition/colour"


def _el(eid: str, **props: Any) -> dict[str, Any]:
    path = ".".join(part.split(":")[0] for part in eid.split("."))
    return {"id": eid, "path": path, **props}


def patient_profile(*extra_constraints: dict[str, Any]) -> dict[str, Any]:
    """A profile on Patient exercising every rule the validator knows."""
    return {
        "resourceType": "StructureDefinition", "id": "adult-patient", "url": PROFILE,
        "name": "AdultPatient", "status": "active", "kind": "resource", "abstract": False,
        "type": "Patient", "derivation": "constraint",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "snapshot": {"element": [
            _el("Patient", min=0, max="*", constraint=[
                {"key": "adult-1", "severity": "error", "human": "born before 2010",
                 "expression": "birthDate < @2010-01-01"},
                {"key": "adult-2", "severity": "warning", "human": "has a telecom",
                 "expression": "telecom.exists()"},
                {"key": "ele-1", "severity": "error", "human": "base rule, skipped",
                 "expression": "false",
                 "source": "http://hl7.org/fhir/StructureDefinition/Element"},
                {"key": "dom-3", "severity": "error", "human": "base rule without source",
                 "expression": "false"},
                {"key": "vs-9", "severity": "error", "human": "an HL7 profile's own rule",
                 "expression": "gender.exists()",
                 "source": "http://hl7.org/fhir/StructureDefinition/vitalsigns"},
                *extra_constraints]),
            _el("Patient.extension", min=0, max="*", slicing={
                "discriminator": [{"type": "value", "path": "url"}], "rules": "open"}),
            _el("Patient.extension:colour", sliceName="colour", min=0, max="1",
                type=[{"code": "Extension", "profile": [EXT]}]),
            _el("Patient.identifier", min=1, max="*", slicing={
                "discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}),
            _el("Patient.identifier:national", sliceName="national", min=1, max="1",
                patternIdentifier={"system": "urn:oid:2.16.156.10011.1.3"}),
            _el("Patient.identifier:local", sliceName="local", min=0, max="*",
                patternIdentifier={"system": "urn:local"}),
            _el("Patient.active", min=0, max="1", fixedBoolean=True),
            _el("Patient.gender", min=1, max="1",
                binding={"strength": "required", "valueSet": VS + "|1.0"}),
            _el("Patient.birthDate", min=1, max="1"),
            _el("Patient.deceased[x]", min=0, max="0",
                type=[{"code": "boolean"}, {"code": "dateTime"}]),
            _el("Patient.maritalStatus", min=0, max="1",
                binding={"strength": "required", "valueSet": VS}),
            _el("Patient.contact", min=0, max="*"),
            _el("Patient.contact.name", min=1, max="1"),
            _el("Patient.generalPractitioner", min=0, max="*", type=[{
                "code": "Reference",
                "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Practitioner"]}]),
        ]},
    }


def colour_extension() -> dict[str, Any]:
    return {"resourceType": "StructureDefinition", "id": "colour", "url": EXT,
            "name": "Colour", "status": "active", "kind": "complex-type", "abstract": False,
            "type": "Extension", "derivation": "constraint",
            "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
            "context": [{"type": "element", "expression": "Patient"}],
            "snapshot": {"element": [
                _el("Extension", min=0, max="*"),
                _el("Extension.url", min=1, max="1", fixedUri=EXT),
                _el("Extension.value[x]", min=1, max="1", type=[{"code": "code"}],
                    binding={"strength": "required", "valueSet": VS})]}}


def value_set() -> dict[str, Any]:
    return {"resourceType": "ValueSet", "id": "colours", "url": VS, "status": "active",
            "compose": {"include": [{"system": CS}, {"system": "http://hl7.org/fhir/"
                                                               "administrative-gender",
                                                     "concept": [{"code": "female"}]}]}}


def code_system() -> dict[str, Any]:
    return {"resourceType": "CodeSystem", "id": "colours", "url": CS, "status": "active",
            "content": "complete", "concept": [{"code": "red", "concept": [{"code": "dark-red"}]},
                                               {"code": "M"}]}


def patient(**changes: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient", "meta": {"profile": [PROFILE]},
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "1"}],
        "gender": "female", "birthDate": "1990-01-01", "telecom": [{"value": "1"}],
        "maritalStatus": {"coding": [{"system": CS, "code": "M"}]},
    }
    for key, value in changes.items():
        if value is None:
            res.pop(key, None)
        else:
            res[key] = value
    return res


@pytest.fixture
def registry() -> ProfileRegistry:
    reg = ProfileRegistry()
    reg.add([patient_profile(), colour_extension(), value_set(), code_system()])
    return reg


def problems(reg: ProfileRegistry, res: dict[str, Any]) -> list[tuple[str, str, str]]:
    found = reg.validate(res, PROFILE)
    assert found is not None
    return [(i.severity, i.code, i.expression[0]) for i in found]


def test_a_conforming_instance(registry: ProfileRegistry) -> None:
    assert problems(registry, patient()) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"birthDate": None}, ("error", "required", "Patient.birthDate")),
    ({"active": False}, ("error", "value", "Patient.active")),
    ({"gender": "male"}, ("error", "code-invalid", "Patient.gender")),
    ({"maritalStatus": {"coding": [{"system": "urn:other", "code": "M"}]}},
     ("error", "code-invalid", "Patient.maritalStatus")),
    ({"maritalStatus": {"text": "married"}}, ("error", "code-invalid", "Patient.maritalStatus")),
    ({"deceasedBoolean": False}, ("error", "structure", "Patient.deceased")),
    ({"contact": [{"name": {"family": "A"}}, {"gender": "male"}]},
     ("error", "required", "Patient.contact[1].name")),
    ({"generalPractitioner": [{"reference": "Organization/o1"}]},
     ("error", "invalid", "Patient.generalPractitioner[0]")),
    ({"generalPractitioner": [{"reference": "http://x.org/fhir/Device/d1/_history/2"}]},
     ("error", "invalid", "Patient.generalPractitioner[0]")),
    ({"birthDate": "2015-01-01"}, ("error", "invariant", "Patient")),
    ({"telecom": None}, ("warning", "invariant", "Patient")),
])
def test_each_rule(registry: ProfileRegistry, changes: dict[str, Any],
                   expected: tuple[str, str, str]) -> None:
    assert problems(registry, patient(**changes)) == [expected]


def test_hl7_profile_invariants_are_enforced_base_ones_are_not(
        registry: ProfileRegistry) -> None:
    # vs-9 (source: an HL7 profile) is checked; ele-1 and dom-3 ("false") are not
    assert problems(registry, patient(gender=None)) == [
        ("error", "invariant", "Patient"), ("error", "required", "Patient.gender")]


def test_references_that_pass(registry: ProfileRegistry) -> None:
    for ref in ({"reference": "Practitioner/p1"}, {"reference": "#contained"},
                {"reference": "urn:uuid:0b8c3a4e-6e7e-4b4f-9d7e-1b2a3c4d5e6f"},
                {"type": "Practitioner", "identifier": {"value": "x"}}, {"display": "Dr"}):
        assert problems(registry, patient(generalPractitioner=[ref])) == [], ref


def test_slices(registry: ProfileRegistry) -> None:
    national = {"system": "urn:oid:2.16.156.10011.1.3", "value": "1"}
    local = {"system": "urn:local", "value": "L1"}
    assert problems(registry, patient(identifier=[local, national, local])) == []
    # the required slice missing; closed slicing refuses an identifier of no slice
    assert problems(registry, patient(identifier=[local])) == [
        ("error", "required", "Patient.identifier")]
    assert problems(registry, patient(identifier=[national, {"system": "urn:x",
                                                             "value": "2"}])) == [
        ("error", "structure", "Patient.identifier[1]")]
    # none at all: the element's minimum and the required slice's
    assert problems(registry, patient(identifier=None)) == [
        ("error", "required", "Patient.identifier")] * 2
    assert problems(registry, patient(identifier=[national, national])) == [
        ("error", "structure", "Patient.identifier")]


def test_extension_slice_checked_against_its_profile(registry: ProfileRegistry) -> None:
    good = {"url": EXT, "valueCode": "dark-red"}
    assert problems(registry, patient(extension=[good])) == []
    assert problems(registry, patient(extension=[{"url": EXT, "valueCode": "blue"}])) == [
        ("error", "code-invalid", "Patient.extension[0].valueCode")]
    assert problems(registry, patient(extension=[{"url": EXT, "valueString": "red"}])) == [
        ("error", "structure", "Patient.extension[0].valueString")]
    assert problems(registry, patient(extension=[{"url": EXT}])) == [
        ("error", "required", "Patient.extension[0].value")]
    assert problems(registry, patient(extension=[good, good])) == [
        ("error", "structure", "Patient.extension")]
    # other extensions: open slicing
    assert problems(registry, patient(extension=[{"url": "urn:x", "valueString": "y"}])) == []


def test_profile_of_another_type_and_unknown_profile(registry: ProfileRegistry) -> None:
    found = registry.validate({"resourceType": "Observation"}, PROFILE)
    assert found is not None and found[0].expression == ["Observation"]
    assert registry.validate(patient(), "http://example.org/unknown") is None


def test_broken_invariant_is_a_warning_not_a_refusal() -> None:
    reg = ProfileRegistry()
    reg.add([patient_profile({"key": "bad-1", "severity": "error", "human": "x",
                              "expression": "name.where("}),
             value_set(), code_system()])
    found = problems(reg, patient())
    assert found == [("warning", "not-supported", "Patient")]


def test_value_set_expansion_rules() -> None:
    held = {CS: code_system()}
    codes = expand(value_set(), held.get)
    assert codes is not None and codes.has(CS, "dark-red") and codes.has(None, "female")
    assert not codes.has(CS, "female")
    # a filter, an unknown code system, a fragment: cannot be listed, so not judged
    assert expand({"compose": {"include": [{"system": CS, "filter": [{}]}]}}, held.get) is None
    assert expand({"compose": {"include": [{"system": "urn:unknown"}]}}, held.get) is None
    fragment = {**code_system(), "content": "fragment"}
    assert expand(value_set(), {CS: fragment}.get) is None
    excluded = expand({"compose": {"include": [{"system": CS}], "exclude": [
        {"system": CS, "concept": [{"code": "M"}]}]}}, held.get)
    assert excluded is not None and not excluded.has(CS, "M") and excluded.has(CS, "red")
    expanded = expand({"expansion": {"contains": [{"system": CS, "code": "a", "contains": [
        {"system": CS, "code": "b"}]}]}}, held.get)
    assert expanded is not None and expanded.has(CS, "b")
    # a value set including itself ends
    loop = {"url": VS, "compose": {"include": [{"valueSet": [VS]}]}}
    assert expand(loop, {VS: loop}.get) is None


# ------------------------------------------------------------------------ held in the store

def _put(core: Core, res: dict[str, Any], res_id: str | None = None) -> None:
    core.resources.update(core.server, res["resourceType"], res_id or res["id"], res)


def test_stored_profiles_are_enforced_and_kept_fresh(core: Core) -> None:
    for res in (colour_extension(), value_set(), code_system()):
        _put(core, res)
    # not held yet: accepted
    core.resources.create(core.server, "Patient", patient(birthDate=None))
    _put(core, patient_profile())
    with pytest.raises(CoreError) as refused:
        core.resources.create(core.server, "Patient", patient(birthDate=None))
    assert refused.value.status == 422
    assert refused.value.issues[0].expression == ["Patient.birthDate"]
    # the stored value set's codes
    with pytest.raises(CoreError):
        core.resources.create(core.server, "Patient", patient(
            extension=[{"url": EXT, "valueCode": "blue"}]))
    cs = code_system()
    cs["concept"].append({"code": "blue"})
    _put(core, cs)
    core.resources.create(core.server, "Patient", patient(
        extension=[{"url": EXT, "valueCode": "blue"}]))
    # the profile relaxed: the next write sees it
    relaxed = patient_profile()
    for element in relaxed["snapshot"]["element"]:
        if element["id"] == "Patient.birthDate":
            element["min"] = 0
    del relaxed["snapshot"]["element"][0]["constraint"]
    _put(core, relaxed)
    core.resources.create(core.server, "Patient", patient(birthDate=None))
    assert PROFILE in registry_of(core).supported_profiles()["Patient"]


def test_definitions_written_by_another_process(core: Core, settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_of(core)
    assert registry.profile(PROFILE) is None  # loaded now: nothing stored
    other = open_core(settings, run_migrations=False)
    try:
        for res in (patient_profile(), value_set(), code_system()):
            _put(other, res)
    finally:
        other.close()
    monkeypatch.setattr(registry_module, "REFRESH_SECONDS", 0.0)
    with pytest.raises(CoreError) as refused:
        core.resources.create(core.server, "Patient", patient(birthDate=None))
    assert refused.value.status == 422


def test_ig_load_makes_the_package_enforceable(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A package built by `conformance ig`, loaded by `ig load` into a fresh data directory;
    a core opened without the guide in memory (``core.services.open_core``, not the app's)
    enforces its profiles from the store."""
    monkeypatch.setenv("SONOBRIDGE_AUDIT", "off")
    out = tmp_path / "ig"
    result = CliRunner().invoke(app, ["conformance", "ig", "--out", str(out), "--no-site"])
    assert result.exit_code == 0, result.output
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["ig", "load", str(out / "package.tgz"),
                                      "--data-dir", str(data)])
    assert "19 StructureDefinition" in " ".join(result.output.split()), result.output
    from sonobridge.conformance.ig.content import examples

    request = copy.deepcopy(next(e for e in examples()
                                 if e["id"] == "example-consultation-request"))
    core = open_core(Settings(data_dir=data, auth="disabled", audit=False))
    try:
        assert registry_of(core).profile(request["meta"]["profile"][0]) is not None
        core.resources.update(core.server, "ServiceRequest", request["id"], request)
        request["extension"][0]["valueCoding"]["code"] = "phone"
        with pytest.raises(CoreError) as refused:
            core.resources.update(core.server, "ServiceRequest", request["id"], request)
        assert refused.value.status == 422
        assert refused.value.issues[0].expression == [
            "ServiceRequest.extension[0].valueCoding"]
    finally:
        core.close()


def _observation_profile(*slices: dict[str, Any], discriminator: dict[str, Any]
                         ) -> dict[str, Any]:
    url = f"{BASE}/StructureDefinition/obs"
    return {"resourceType": "StructureDefinition", "id": "obs", "url": url, "name": "Obs",
            "status": "active", "kind": "resource", "abstract": False, "type": "Observation",
            "derivation": "constraint", "snapshot": {"element": [
                _el("Observation", min=0, max="*"),
                _el("Observation.component", min=0, max="*", slicing={
                    "discriminator": [discriminator], "rules": "open"}),
                *slices,
                _el("Observation.value[x]", min=0, max="1", slicing={
                    "discriminator": [{"type": "type", "path": "$this"}], "rules": "closed"},
                    type=[{"code": "Quantity"}, {"code": "string"}]),
                _el("Observation.value[x]:valueQuantity", sliceName="valueQuantity", min=0,
                    max="1", type=[{"code": "Quantity"}]),
            ]}}


def test_type_exists_and_unknown_discriminators() -> None:
    reg = ProfileRegistry()
    # exists: the slice "withValue" requires valueQuantity; at least one such component
    reg.add([_observation_profile(
        _el("Observation.component:withValue", sliceName="withValue", min=1, max="*"),
        _el("Observation.component:withValue.value[x]", min=1, max="1"),
        discriminator={"type": "exists", "path": "value"})])
    url = f"{BASE}/StructureDefinition/obs"
    obs: dict[str, Any] = {"resourceType": "Observation", "valueQuantity": {"value": 1},
                           "component": [{"code": {"text": "a"}, "valueString": "x"}]}

    def found(res: dict[str, Any]) -> list[tuple[str, str, str]]:
        issues = reg.validate(res, url)
        assert issues is not None
        return [(i.severity, i.code, i.expression[0]) for i in issues]

    assert found(obs) == []
    assert found({**obs, "component": [{"code": {"text": "a"}}]}) == [
        ("error", "required", "Observation.component")]
    # type on $this: a choice element's typed slice; the slicing is closed, so a string
    # value (allowed by the element) belongs to no slice
    string_valued = {k: v for k, v in obs.items() if k != "valueQuantity"}
    assert found({**string_valued, "valueString": "s"}) == [
        ("error", "structure", "Observation.valueString")]
    # a profile discriminator cannot be evaluated: a warning, never a refusal
    reg2 = ProfileRegistry()
    reg2.add([_observation_profile(
        _el("Observation.component:x", sliceName="x", min=5, max="*"),
        discriminator={"type": "profile", "path": "resolve()"})])
    issues = reg2.validate(obs, url)
    assert issues is not None
    assert [(i.severity, i.code) for i in issues] == [("warning", "not-supported")]
