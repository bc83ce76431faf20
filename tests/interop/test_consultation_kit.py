"""The conformance kit's consultation suite (sonobridge/conformance/kit/consultation.py) run
against a real ``sonobridge serve``: every test passes and the kit leaves nothing behind; with
no target it skips with the reason."""

from __future__ import annotations

import httpx

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


def test_the_consultation_suite_passes_against_sonobridge(tmp_path):
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample") as (base, _log):
        results = run(Options(target=f"{base}/fhir", suites=("consultation",)))
        left = {kind: httpx.get(f"{base}/fhir/{kind}", params={"_summary": "count"}).json()[
            "total"] for kind in ("Task", "Appointment", "Slot", "Patient", "Provenance")}
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert len(outcomes) == 7
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert left == {"Task": 0, "Appointment": 0, "Slot": 0, "Patient": 0, "Provenance": 0}


def test_without_a_target_the_suite_skips_with_the_reason():
    results = run(Options(target=None, suites=("consultation",)))
    assert [r.outcome for r in results] == ["skip"]
    assert "--target" in results[0].message
