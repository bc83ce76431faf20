"""A real `sonobridge serve` process (uvicorn) on a free port, driven over TCP with httpx."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp_path / "data"),
           "SONOBRIDGE_DATABASE_URL": db_url, "SONOBRIDGE_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sonobridge", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield base, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


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


def test_non_loopback_listener_is_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sonobridge", "serve", "--host", "0.0.0.0",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "non-loopback" in result.stderr
