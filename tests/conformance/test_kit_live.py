"""End to end: a real SonoBridge (HTTP, DIMSE and MLLP listeners) and ``sonobridge conformance
run`` with the fhir, dicomweb, dimse and hl7 suites, as CI runs it: all green, a skip only with
its reason, the three reports written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from tests.live import free_port, serve


def test_kit_against_sonobridge(tmp_path):
    dicom, mllp, move = free_port(), free_port(), free_port()
    with serve(f"sqlite:///{tmp_path / 'kit.db'}", tmp_path, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(dicom), SONOBRIDGE_MLLP_PORT=str(mllp),
               SONOBRIDGE_DICOM_PEERS=f"SBKIT@127.0.0.1:{move}") as (base, _log):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "sonobridge", "conformance", "run",
             "--target", f"{base}/fhir", "--suite", "fhir,dicomweb,dimse,hl7",
             "--dicom", f"SONOBRIDGE@127.0.0.1:{dicom}", "--mllp", f"127.0.0.1:{mllp}",
             "--move-dest", "SBKIT", "--move-port", str(move),
             "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
             "--html", str(tmp_path / "r.html")],
            capture_output=True, text=True, timeout=170,
            env={**os.environ, "COLUMNS": "200"})
        elapsed = time.monotonic() - started
    report = json.loads((tmp_path / "r.json").read_text())
    bad = [(r["id"], r["outcome"], r["message"]) for r in report["results"]
           if r["outcome"] in ("fail", "error")]
    assert not bad, bad
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(r["message"] for r in report["results"] if r["outcome"] == "skip")
    ids = {r["id"]: r["outcome"] for r in report["results"]}
    for must_pass in ("fhir-cap-01", "fhir-read-Patient", "fhir-search-ImagingStudy",
                      "fhir-history-Observation", "fhir-cond-01", "fhir-tx-01",
                      "fhir-include-01", "fhir-paging-01", "fhir-err-04",
                      "dicomweb-stow-01", "dicomweb-wado-06", "dicomweb-err-03",
                      "dimse-store-01", "dimse-get-01", "dimse-move-01", "dimse-mwl-01",
                      "dimse-mwl-02", "dimse-commit-01", "hl7-ack-01"):
        assert ids.get(must_pass) == "pass", (must_pass, ids.get(must_pass))
    assert {r["suite"] for r in report["results"]} == {"fhir", "dicomweb", "dimse", "hl7"}
    assert ET.parse(tmp_path / "r.xml").getroot().get("failures") == "0"
    assert "SonoBridge conformance kit" in (tmp_path / "r.html").read_text()
    assert f"{len(report['results'])} tests:" in done.stderr
    assert elapsed < 60, elapsed
