"""The conformance kit's reports suite against a running SonoBridge (``sonobridge conformance
run --suite reports``): every test passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.live import serve


def _run(base: str, tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "sonobridge", "conformance", "run", "--target", f"{base}/fhir",
         "--suite", "reports", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=170, env={**os.environ, "COLUMNS": "200"})
    report = json.loads((tmp_path / "r.json").read_text())
    report["returncode"] = done.returncode
    report["stderr"] = done.stderr
    return report


def test_reports_suite_passes_against_sonobridge(tmp_path):
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample") as (base, _log):
        report = _run(base, tmp_path)
    outcomes = {r["id"]: (r["outcome"], r["message"]) for r in report["results"]}
    assert set(outcomes) == {"reports-sr-01", "reports-sr-02", "reports-sr-03",
                             "reports-status-01", "reports-critical-01"}
    assert all(o == "pass" for o, _ in outcomes.values()), outcomes
    assert report["returncode"] == 0, report["stderr"][-2000:]
