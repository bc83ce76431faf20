"""A real `sonobridge serve` process (uvicorn) on a free port, driven over TCP with httpx."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import serve


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve(db_url, tmp_path, SONOBRIDGE_LOG_FORMAT="json") as running:
        yield running


def test_serve_starts_with_sample_and_answers(live):
    base, log = live
    output = log.read_text()
    assert f"{base}/fhir" in output and f"{base}/fhir/metadata" in output
    assert "Sample data" in output
    with httpx.Client(base_url=base, timeout=10) as http:
        patient = http.get("/fhir/Patient/sample-patient")
        assert patient.status_code == 200
        assert patient.json()["name"][0]["text"] == "张伟"
        order = http.get("/fhir/ServiceRequest/sample-abdominal-us").json()
        assert order["subject"]["reference"] == "Patient/sample-patient"
        assert order["requester"]["reference"] == "Practitioner/referring-gp"
        created = http.post("/fhir/Observation", json={
            "resourceType": "Observation", "status": "final",
            "code": {"text": "liver span"}, "valueQuantity": {"value": 14.50, "unit": "cm"}},
            headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201
        read = http.get(created.headers["location"].rsplit("/_history", 1)[0])
        assert read.content == created.content
        assert http.get("/readyz").status_code == 200
        assert "sonobridge_http_requests_total" in http.get("/metrics").text


def test_open_apis_on_a_non_loopback_listener_are_refused(tmp_path):
    env = {**os.environ, "SONOBRIDGE_AUTH": "disabled"}
    result = subprocess.run([sys.executable, "-m", "sonobridge", "serve", "--host", "0.0.0.0",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2
    assert "SONOBRIDGE_AUTH=disabled is refused" in result.stderr
    assert "not loopback" in result.stderr
