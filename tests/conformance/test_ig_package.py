"""The implementation guide package: layout, index, snapshots, examples against their profiles,
the HTML site, and the build time."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from sonobridge import __version__
from sonobridge.app.cli.conformance_ig import capability
from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.build import Guide, build, read_package
from sonobridge.conformance.ig.load import PACKAGE_ONLY_TYPES
from sonobridge.conformance.ig.validate import check
from sonobridge.core.validation import validate


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Guide, float]:
    out = tmp_path_factory.mktemp("ig")
    started = time.monotonic()
    g = build(out, capability(content.CANONICAL))
    return out, g, time.monotonic() - started


@pytest.fixture(scope="module")
def files(built: tuple[Path, Guide, float]) -> dict[str, Any]:
    return read_package(built[0] / "package.tgz")


def test_build_is_fast(built: tuple[Path, Guide, float]) -> None:
    assert built[2] < 30, f"IG build took {built[2]:.1f} s"


def test_package_json(files: dict[str, Any]) -> None:
    pkg = files["package/package.json"]
    assert pkg["name"] == "sonobridge.fhir.ig"
    assert pkg["version"] == __version__
    assert pkg["fhirVersions"] == ["4.0.1"]
    assert pkg["canonical"] == content.CANONICAL
    assert pkg["type"] == "IG"
    assert pkg["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}


def test_tarball_is_all_under_package(built: tuple[Path, Guide, float]) -> None:
    with tarfile.open(built[0] / "package.tgz", "r:gz") as tar:
        names = tar.getnames()
    assert names and all(n.startswith("package/") for n in names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("folder", ["package/", "package/example/"])
def test_index_matches_files(files: dict[str, Any], folder: str) -> None:
    index = files[f"{folder}.index.json"]
    assert index["index-version"] == 1
    listed = {f"{folder}{entry['filename']}": entry for entry in index["files"]}
    present = {n for n in files if n.startswith(folder) and "/" not in n[len(folder):]
               and not n.endswith(("/package.json", "/.index.json"))}
    assert set(listed) == present
    for name, entry in listed.items():
        res = files[name]
        assert entry["resourceType"] == res["resourceType"]
        assert entry["id"] == res["id"]
        for key in ("url", "version", "kind", "type"):
            assert entry.get(key) == (res.get(key) if isinstance(res.get(key), str) else None)


def test_what_the_package_holds(files: dict[str, Any]) -> None:
    kinds = [f["resourceType"] for f in files["package/.index.json"]["files"]]
    # seven profiles, eleven simple extensions, the consultation-transition one
    assert kinds.count("StructureDefinition") == 19
    assert {"ValueSet", "CodeSystem", "SearchParameter", "CapabilityStatement",
            "ImplementationGuide", "NamingSystem", "OperationDefinition", "Questionnaire",
            "Measure", "Library", "Basic", "ViewDefinition"} <= set(kinds)
    names = {files[f"package/{f['filename']}"].get("name")
             for f in files["package/.index.json"]["files"]}
    assert {"SonoConsultationRequest", "SonoConsultationTask", "SonoConsultationAppointment",
            "SonoUltrasoundReport", "SonoUltrasoundObservation",
            "SonoCriticalValueCommunication", "SonoTeachingCase"} <= names


def test_every_profile_has_snapshot_and_differential(built: tuple[Path, Guide, float]) -> None:
    for sd in built[1].profiles():
        snapshot = sd["snapshot"]["element"]
        differential = sd["differential"]["element"]
        assert snapshot[0]["path"] == sd["type"] and differential[0]["path"] == sd["type"]
        ids = {e["id"] for e in snapshot}
        for diff in differential:
            assert diff["id"] in ids, diff["id"]
            in_snapshot = next(e for e in snapshot if e["id"] == diff["id"])
            for key in ("min", "max", "binding", "mustSupport"):
                if key in diff:
                    assert in_snapshot[key] == diff[key]
        assert all("min" in e and "max" in e for e in snapshot)
        # the base's backbone elements are expanded, e.g. Task.input.value[x]
        if sd["type"] == "Task":
            assert "Task.input.value[x]" in ids


def test_every_conformance_resource_passes_the_servers_validation(
        built: tuple[Path, Guide, float]) -> None:
    for res in built[1].conformance:
        if res["resourceType"] in PACKAGE_ONLY_TYPES:  # SQL on FHIR views: not R4 types
            assert res["resourceType"] == "ViewDefinition" and res["select"], res["id"]
            continue
        validate(res, res["resourceType"])


def test_capability_statement_passes_validation(built: tuple[Path, Guide, float]) -> None:
    cs = next(r for r in built[1].conformance if r["resourceType"] == "CapabilityStatement")
    validate(cs, "CapabilityStatement")
    # the package's statement names the guide's profiles for their types
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert by_type["ServiceRequest"]["supportedProfile"] == [
        content.url("StructureDefinition", "sono-consultation-request")]
    assert by_type["Task"]["supportedProfile"] == [
        content.url("StructureDefinition", "sono-consultation-task")]
    assert "supportedProfile" not in by_type["Patient"]
    assert cs["implementationGuide"] == [content.url("ImplementationGuide", "sonobridge")]


def test_examples_validate_against_their_profiles(built: tuple[Path, Guide, float]) -> None:
    g = built[1]
    profiles = {sd["url"]: sd for sd in g.profiles()}
    claimed = set()
    for example in g.examples:
        validate(example, example["resourceType"])
        for url in example.get("meta", {}).get("profile", []):
            claimed.add(url)
            assert check(example, profiles[url], g.codes_of) == [], example["id"]
    resource_profiles = {u for u, sd in profiles.items() if sd["kind"] == "resource"}
    assert claimed == resource_profiles, "every profile has an example"


def _broken(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    copy = {k: v for k, v in example.items() if k not in changes}
    copy.update({k: v for k, v in changes.items() if v is not None})
    return copy


def test_broken_examples_are_caught(built: tuple[Path, Guide, float]) -> None:
    g = built[1]
    profiles = {sd["type"]: sd for sd in g.profiles() if sd["kind"] == "resource"}
    by_id = {e["id"]: e for e in g.examples}
    task = by_id["example-consultation-task"]
    bad_state = _broken(task, businessStatus={"coding": [{
        "system": content.url("CodeSystem", "sono-consultation-business-status"),
        "code": "no-such-state"}]})
    assert any("businessStatus" in p for p in check(bad_state, profiles["Task"], g.codes_of))
    no_request = _broken(task, basedOn=None, focus=None)
    assert any("sono-task-2" in p for p in check(no_request, profiles["Task"], g.codes_of))
    assert check(_broken(task, basedOn=None), profiles["Task"], g.codes_of) == []
    report = by_id["example-ultrasound-report"]
    wrong_category = _broken(report, category=[{"coding": [{"system": content.V2_0074,
                                                           "code": "LAB"}]}])
    assert any("pattern" in p for p in check(wrong_category, profiles["DiagnosticReport"],
                                             g.codes_of))
    obs = by_id["example-liver-lesion-size"]
    bad_type = _broken(obs, valueQuantity=None, valueBoolean=True)
    assert any("not allowed" in p for p in check(bad_type, profiles["Observation"], g.codes_of))
    comm = by_id["example-critical-value"]
    wrong_target = _broken(comm, subject={"reference": "Group/1"})
    assert any("Patient" in p for p in check(wrong_target, profiles["Communication"],
                                             g.codes_of))


def test_site_pages(built: tuple[Path, Guide, float]) -> None:
    out, g, _ = built
    index = (out / "site" / "index.html").read_text("utf-8")
    assert "实施指南" in index and "implementation guide" in index
    for sd in g.profiles():
        page = out / "site" / f"StructureDefinition-{sd['id']}.html"
        assert page.exists()
        html = page.read_text("utf-8")
        assert f"StructureDefinition-{sd['id']}.html" in index
        assert "元素 Elements" in html and "示例 Examples" in html
        for element in sd["differential"]["element"]:
            assert f"<code>{element['path']}</code>" in html
        for example in g.examples:
            if sd["url"] in example.get("meta", {}).get("profile", []):
                assert f"{example['resourceType']}/{example['id']}" in html
        for element in sd["differential"]["element"]:
            vs = element.get("binding", {}).get("valueSet", "")
            if vs:
                assert f"ValueSet-{vs.rsplit('/', 1)[-1]}.html" in html
                assert (out / "site" / f"ValueSet-{vs.rsplit('/', 1)[-1]}.html").exists()


def test_build_is_reproducible(tmp_path: Path, built: tuple[Path, Guide, float]) -> None:
    build(tmp_path, capability(content.CANONICAL), site=False)
    assert (tmp_path / "package.tgz").read_bytes() == (built[0] / "package.tgz").read_bytes()
