"""The conformance kit's teaching suite against SonoBridge served by uvicorn: all pass, and
a case it publishes is withdrawn afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[str]:
    with serve(db_url, tmp_path, "--no-sample") as (base, _):
        yield base


def test_teaching_suite_against_sonobridge(live):
    results = run(Options(target=f"{live}/fhir", suites=("teaching",), timeout=30))
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert len(results) == 7
    for test, (outcome, message) in outcomes.items():
        assert outcome == "pass", (test, message)
    import httpx

    cases = httpx.get(f"{live}/fhir/DocumentReference", params={
        "category": "urn:sonobridge:teaching-keyword|conformance-kit"}).json()
    assert cases.get("total", len(cases.get("entry", []))) == 0  # withdrawn by the teardown


def test_teaching_suite_skips_without_the_operation(live, monkeypatch):
    """A server whose CapabilityStatement lists no $teaching-case: every test skips."""
    import dataclasses

    from sonobridge.conformance.kit import teaching

    def not_offered(check):
        check.ctx.state["teaching_missing"] = True
        raise teaching.Skipped("the CapabilityStatement lists no $teaching-case on ImagingStudy")

    tests = [dataclasses.replace(teaching.TESTS[0], run=not_offered), *teaching.TESTS[1:]]
    monkeypatch.setattr(teaching, "TESTS", tests)
    results = run(Options(target=f"{live}/fhir", suites=("teaching",), timeout=30))
    assert {r.outcome for r in results} == {"skip"}
