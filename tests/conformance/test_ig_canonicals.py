"""Every canonical the server emits resolves to a resource of the implementation guide: in the
NPM package ``sonobridge conformance ig`` builds, and (R4 types) published by the server.

Canonicals are found three ways, so that a new one cannot slip past: the literal strings of
the package's Python sources (also written ``f"{CANONICAL}/Type/id"`` or ``BASE + "/Type/id"``),
the module-level string constants of every module (composed ones included), and what a running
server says: its CapabilityStatement and the definitions of its registered operations.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

import sonobridge
from sonobridge.app.cli.conformance_ig import capability
from sonobridge.conformance.ig import content
from sonobridge.conformance.ig.build import Guide, build, read_package
from sonobridge.conformance.ig.domains import canonical_of
from sonobridge.conformance.ig.load import PACKAGE_ONLY_TYPES, ensure_published

BASE = "http://sonobridge.org/fhir/"
SOURCES = Path(sonobridge.__file__).parent
# "…/Type/id" written literally, or after the canonical base held in a constant
IN_SOURCE = re.compile(
    r"(?:http://sonobridge\.org/fhir|\{(?:CANONICAL|BASE)\}|BASE \+ [\"'])"
    r"/([A-Z][A-Za-z]+|sid)/([a-z0-9][a-z0-9-]*[a-z0-9])(?![\w{-])")
# Strings under the base that are not canonicals of one resource: bases other code appends to.
NOT_CANONICALS = {
    f"{BASE}SubscriptionTopic",     # core/subscriptions/topics.py: TOPIC_BASE + "/" + code
    f"{BASE}OperationDefinition/",  # a string split over two lines in core/reports.py
    f"{BASE}StructureDefinition/",  # the same in conformance/kit/reports.py
}
# Operations defined elsewhere (used as those specifications define them).
EXTERNAL_DEFINITIONS = ("http://hl7.org/fhir/OperationDefinition/",
                        "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/",
                        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/",
                        "http://sql-on-fhir.org/OperationDefinition/",
                        "https://profiles.ihe.net/ITI/")
NOT_YET_MOVED: dict[str, str] = {}  # every domain names the guide's canonical


def source_canonicals() -> dict[str, str]:
    """canonical -> the file that names it."""
    found: dict[str, str] = {}
    for path in sorted(SOURCES.rglob("*.py")):
        for kind, rid in IN_SOURCE.findall(path.read_text("utf-8")):
            found.setdefault(f"{BASE}{kind}/{rid}", str(path.relative_to(SOURCES)))
    return found


def constant_canonicals() -> dict[str, str]:
    """canonical -> the module whose module-level constant holds it."""
    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(sonobridge.__path__, "sonobridge."):
        if ".tests" in info.name or info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra not installed: its sources
            continue       # are still read by source_canonicals
        for value in vars(module).values():
            if isinstance(value, str) and value.startswith(BASE):
                found.setdefault(value.split("|")[0], info.name)
    return found


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Guide, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ig")
    g = build(out, capability(content.CANONICAL), site=False)
    return g, read_package(out / "package.tgz")


@pytest.fixture(scope="module")
def resolvable(package: tuple[Guide, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """canonical -> resource, from the package's files (not the in-memory guide)."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in package[1].items():
        if name.startswith("package/") and "/example/" not in name and "resourceType" in res:
            for canonical in canonical_of(res):
                out[canonical] = res
    return out


def _unresolved(names: dict[str, str], resolvable: dict[str, Any]) -> list[str]:
    return sorted(f"{c} ({where})" for c, where in names.items()
                  if c not in resolvable and c not in NOT_CANONICALS)


def test_source_literals_resolve(resolvable: dict[str, Any]) -> None:
    names = source_canonicals()
    # the scan finds what it must (a regression of the pattern would make this test empty)
    for expected in ("StructureDefinition/critical-value-sent-after", "sid/sr-instance",
                     "CodeSystem/bi-rads", "OperationDefinition/cda",
                     "StructureDefinition/device-qc-date"):
        assert f"{BASE}{expected}" in names, expected
    assert _unresolved(names, resolvable) == []


def test_module_constants_resolve(resolvable: dict[str, Any]) -> None:
    names = constant_canonicals()
    for expected in ("StructureDefinition/qc-total-score", "qc-sample",
                     "CodeSystem/sono-critical-value-flag", "Library/us-qc-indicators"):
        assert f"{BASE}{expected}" in names, expected
    assert _unresolved(names, resolvable) == []


def test_what_a_running_server_names_resolves(client: Any, core: Any,
                                              resolvable: dict[str, Any]) -> None:
    statement = client.get("/fhir/metadata").json()
    named: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith(BASE):
            named.setdefault(node.split("|")[0], "/fhir/metadata")

    walk(statement)
    for op in core.operations.all():
        assert op.definition, op.name
        if op.definition.startswith(BASE):
            named.setdefault(op.definition, f"${op.name}")
        elif op.definition in NOT_YET_MOVED:
            named.setdefault(NOT_YET_MOVED[op.definition], f"${op.name}")
        else:
            assert op.definition.startswith(EXTERNAL_DEFINITIONS), (op.name, op.definition)
    for topic in ("consultation-task-changed", "imaging-study-available", "report-final",
                  "critical-value"):
        assert f"{BASE}SubscriptionTopic/{topic}" in named, topic
    assert f"{BASE}OperationDefinition/cda" in named
    assert _unresolved(named, resolvable) == []


def test_the_allow_list_is_not_stale() -> None:
    everything = {**source_canonicals(), **constant_canonicals()}
    literal = set()
    for path in SOURCES.rglob("*.py"):
        text = path.read_text("utf-8")
        literal |= {s for s in NOT_CANONICALS if f'"{s}"' in text}
    assert literal | (NOT_CANONICALS & set(everything)) == NOT_CANONICALS


def _bilingual(text: str) -> bool:
    has_cjk = any(unicodedata.name(ch, "").startswith("CJK") for ch in text)
    return has_cjk and re.search(r"[A-Za-z]{3,}", text) is not None


def test_every_definition_has_chinese_and_english_text(
        package: tuple[Guide, dict[str, Any]]) -> None:
    missing = []
    for res in package[0].conformance:
        if res["resourceType"] in ("SearchParameter", "CapabilityStatement"):
            continue  # generated from the R4 definitions and the router
        text = " ".join(str(res.get(k, "")) for k in ("title", "description")) + \
            str((res.get("text") or {}).get("div", ""))
        if not _bilingual(text):
            missing.append(f"{res['resourceType']}/{res['id']}")
    assert missing == []


def test_published_by_the_server(core: Any, client: Any,
                                 package: tuple[Guide, dict[str, Any]]) -> None:
    written = ensure_published(core.resources, core.server)
    assert not written.refused
    wanted = [r for r in package[0].conformance if r["resourceType"] not in
              {*PACKAGE_ONLY_TYPES, "CapabilityStatement"}]  # /metadata serves it live
    assert sum(written.counts.values()) == len(wanted)
    for kind, canonical in (
            ("StructureDefinition", f"{BASE}StructureDefinition/critical-value-late"),
            ("StructureDefinition", f"{BASE}StructureDefinition/consultation-transition"),
            ("StructureDefinition", f"{BASE}StructureDefinition/sono-teaching-case"),
            ("CodeSystem", f"{BASE}CodeSystem/bi-rads"),
            ("OperationDefinition", f"{BASE}OperationDefinition/teaching-case"),
            ("OperationDefinition", f"{BASE}OperationDefinition/critical-escalate"),
            ("Questionnaire", f"{BASE}Questionnaire/us-image-qc"),
            ("Measure", f"{BASE}Measure/us-hr-01"),
            ("Library", f"{BASE}Library/us-qc-indicators")):
        bundle = client.get(f"/fhir/{kind}", params={"url": canonical}).json()
        assert [e["resource"]["url"] for e in bundle.get("entry", [])] == [canonical], kind
    bundle = client.get("/fhir/NamingSystem",
                        params={"value": f"{BASE}sid/sr-instance"}).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == ["sr-instance"]
    topic = client.get("/fhir/Basic/topic-critical-value").json()
    assert f"{BASE}SubscriptionTopic/critical-value" in canonical_of(topic)
    bundle = client.get("/fhir/Basic", params={"code": "SubscriptionTopic"}).json()
    assert len(bundle.get("entry", [])) == 4
    # the views are in the package only
    assert client.get("/fhir/ViewDefinition/us-reports").status_code in (400, 404)
    assert not ensure_published(core.resources, core.server).counts


def test_document_format_codes_are_in_the_guide(package: tuple[Guide, dict[str, Any]]) -> None:
    """The format a stored WS/T 500 DocumentReference carries is a code of the guide's
    sono-document-format value set (system and code as ``mappings/cda`` writes them)."""
    from sonobridge.mappings.cda import codes

    vs = package[1]["package/ValueSet-sono-document-format.json"]
    listed = {(i["system"], c["code"]) for i in vs["compose"]["include"] for c in i["concept"]}
    assert listed == {(codes.FORMAT_SYSTEM, codes.REPORT_FORMAT),
                      (codes.FORMAT_SYSTEM, codes.CONSULT_FORMAT)}
    assert all(_bilingual(c["display"] + c["designation"][0]["value"])
               for i in vs["compose"]["include"] for c in i["concept"])
