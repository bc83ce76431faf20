"""The conformance kit's CDA suite against a real SonoBridge (all pass, everything it wrote
deleted after), and without a target (one skip with the reason)."""

from __future__ import annotations

from pathlib import Path

import httpx

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


def test_cda_suite_against_sonobridge(tmp_path: Path) -> None:
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample") as (base, _):
        results = run(Options(target=f"{base}/fhir", suites=("cda",), timeout=20))
        left = {kind: httpx.get(f"{base}/fhir/{kind}?_summary=count").json()["total"]
                for kind in ("Patient", "DiagnosticReport", "DocumentReference", "Binary")}
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert set(outcomes) == {"cda-cap-01", "cda-make-01", "cda-make-02", "cda-store-01",
                             "cda-recv-01", "cda-recv-02", "cda-recv-03"}
    assert left == {"Patient": 0, "DiagnosticReport": 0, "DocumentReference": 0, "Binary": 0}


def test_cda_suite_without_a_target() -> None:
    results = run(Options(suites=("cda",)))
    assert [r.outcome for r in results] == ["skip"]
    assert "--target" in results[0].message
