"""The conformance kit's profiles suite against a real SonoBridge (all pass, nothing stored),
and without a target (one skip with the reason)."""

from __future__ import annotations

from pathlib import Path

import httpx

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


def test_profiles_suite_against_sonobridge(tmp_path: Path) -> None:
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample") as (base, _):
        results = run(Options(target=f"{base}/fhir", suites=("profiles",), timeout=10))
        # the refused create stored nothing
        total = httpx.get(f"{base}/fhir/ServiceRequest?_summary=count").json()["total"]
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert {"profiles-cap-01", "profiles-pub-01", "profiles-pub-02", "profiles-write-01",
            "profiles-validate-example-consultation-request",
            "profiles-broken-example-consultation-task",
            "profiles-validate-example-teaching-case"} <= set(outcomes)
    assert len(outcomes) == 4 + 7 + 3  # 7 profiled examples (the teaching case among them)
    assert total == 0


def test_profiles_suite_without_a_target() -> None:
    results = run(Options(suites=("profiles",)))
    assert [r.outcome for r in results] == ["skip"]
    assert "--target" in results[0].message
