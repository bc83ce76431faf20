"""The kit's reports: JUnit XML that CI parses, the JSON shape, one self-contained HTML page;
and the runner's outcomes (pass, fail, skip, error) and exit status."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from sonobridge.conformance.kit.model import (
    Check,
    Evidence,
    Group,
    Requirement,
    Result,
    Skipped,
    TestDef,
)
from sonobridge.conformance.kit.report import as_json, html_report, junit
from sonobridge.conformance.kit.runner import Options, exit_status, run_test

REQ = Requirement("The server does the thing.", "https://hl7.org/fhir/R4/http.html#read")


def _results() -> list[Result]:
    def passes(check: Check) -> None:
        check.record(Evidence("http", "GET /fhir/Patient/1 → 200", request="GET /x\n"
                              "Authorization: ***", response="HTTP 200\n\n{\"a\": \"<b>\"}"))

    def fails(check: Check) -> None:
        check.record(Evidence("mllp", "MLLP → answered", response="\x0bMSH|^~\\&|\x1c\r"))
        check.fail("expected 404, got 500 <oops>")

    def skips(check: Check) -> None:
        raise Skipped("not declared")

    def breaks(check: Check) -> None:
        raise KeyError("entry")

    from sonobridge.conformance.kit.model import Context

    ctx = Context(Options())
    return [run_test(ctx, TestDef(f"t-{n}", f"test {n}", REQ, fn), "fhir" if n < 2 else "dimse",
                     "g") for n, fn in enumerate((passes, fails, skips, breaks))]


def test_outcomes_and_exit_status():
    results = _results()
    assert [r.outcome for r in results] == ["pass", "fail", "skip", "error"]
    assert results[1].message == "expected 404, got 500 <oops>"
    assert results[3].message.startswith("KeyError: 'entry' (at test_kit_reports.py:")
    assert exit_status(results) == 1
    assert exit_status([results[0], results[2]]) == 0  # skips do not fail a run


def test_junit_parses_and_counts():
    root = ET.fromstring(junit(_results()))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) \
        == ("4", "1", "1", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"fhir", "dimse"}
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["t-0: test 0", "t-1: test 1", "t-2: test 2",
                                              "t-3: test 3"]
    assert cases[1].find("failure").get("message") == "expected 404, got 500 <oops>"
    assert cases[2].find("skipped") is not None and cases[3].find("error") is not None
    props = {p.get("name"): p.get("value") for p in cases[0].iter("property")}
    assert props["specification"] == REQ.url
    assert "GET /fhir/Patient/1 → 200" in cases[0].find("system-out").text
    assert "\\x0bMSH|" in cases[1].find("system-out").text  # control characters shown


def test_json_shape():
    options = Options(target="http://x/fhir", suites=("fhir", "dimse"))
    body = json.loads(json.dumps(as_json(_results(), options)))
    assert body["summary"] == {"pass": 1, "fail": 1, "skip": 1, "error": 1}
    assert body["target"]["fhir"] == "http://x/fhir" and body["suites"] == ["fhir", "dimse"]
    first = body["results"][0]
    assert set(first) == {"id", "title", "suite", "group", "outcome", "message", "duration_s",
                          "requirement", "evidence"}
    assert first["requirement"] == {"text": REQ.text, "url": REQ.url}
    assert first["evidence"][0]["summary"] == "GET /fhir/Patient/1 → 200"


def test_html_is_self_contained_and_escaped():
    page = html_report(_results(), Options(target="http://x/fhir"))
    assert page.startswith("<!doctype html>") and "<style>" in page
    for external in ("<link", "<script", "src=", "@import", "url("):
        assert external not in page
    assert "&lt;oops&gt;" in page and "<oops>" not in page  # the server's words are escaped
    assert "&lt;b&gt;" in page
    assert f"href='{REQ.url}'" in page  # the requirement links to the spec
    for outcome in ("pass", "fail", "skip", "error"):
        assert f"class='o {outcome}'" in page


def test_group_that_cannot_list_its_tests():
    """A group whose tests come from what the server declared, when the server declared
    nothing readable: one failed test with the reason, not a crash."""
    from sonobridge.conformance.kit import runner
    from sonobridge.conformance.kit.model import Suite

    def broken(ctx):
        raise ValueError("no CapabilityStatement")

    suite = Suite("fhir", "FHIR", lambda ctx: [Group("g", "declared", broken)])
    original = runner.suites_for
    runner.suites_for = lambda names: [suite]
    try:
        results = runner.run(Options(suites=("fhir",)))
    finally:
        runner.suites_for = original
    assert [(r.test.id, r.outcome, r.message) for r in results] == [
        ("g-00", "fail", "ValueError: no CapabilityStatement")]
