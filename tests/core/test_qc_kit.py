"""The conformance kit's QC suite against a real SonoBridge (all pass, nothing left behind),
and without a target (one skip naming --target)."""

from __future__ import annotations

from pathlib import Path

import httpx

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


def test_qc_suite_against_sonobridge(tmp_path: Path) -> None:
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample") as (base, _):
        results = run(Options(target=f"{base}/fhir", suites=("qc",), timeout=20))
        left = httpx.get(f"{base}/fhir/DiagnosticReport?_summary=count").json()["total"]
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert outcomes and all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert set(outcomes) == {"qc-view-01", "qc-view-02", "qc-measure-01", "qc-measure-02"}
    assert left == 0


def test_qc_suite_without_a_target() -> None:
    results = run(Options(suites=("qc",)))
    assert [r.outcome for r in results] == ["skip"]
    assert "--target" in results[0].message
