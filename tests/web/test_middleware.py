"""The web layer's own guards (security hardening, item 13): ``X-Forwarded-*`` believed only
from trusted proxies; ``nosniff`` on every answer and ``no-store`` on every answer that may
hold patient data."""

from __future__ import annotations

import dataclasses

import pytest
from starlette.testclient import TestClient

from sonobridge.app.server import create_app
from sonobridge.config import Settings

PATIENT = {"resourceType": "Patient", "name": [{"family": "Li"}]}
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.org",
             "X-Forwarded-Prefix": "/x"}


def location(settings: Settings, core, client_address: str) -> str:
    with TestClient(create_app(settings, core), base_url="http://sono.test",
                    client=(client_address, 50000)) as http:
        r = http.post("/fhir/Patient", json=PATIENT, headers=FORWARDED)
        assert r.status_code == 201, r.text
        return r.headers["location"]


def test_forwarded_headers_from_an_untrusted_address_are_ignored(settings, core):
    assert location(settings, core, "203.0.113.7").startswith("http://sono.test/fhir/Patient/")


def test_forwarded_headers_from_loopback_are_honoured_by_default(settings, core):
    assert location(settings, core, "127.0.0.1").startswith("https://evil.example.org/x/fhir/")


def test_trusted_proxies_may_be_networks(settings, core):
    settings = dataclasses.replace(settings, trusted_proxies="10.0.0.0/8")
    assert location(settings, core, "10.20.30.40").startswith("https://evil.example.org/x/")
    assert location(settings, core, "127.0.0.1").startswith("http://sono.test/")


@pytest.mark.parametrize("path,no_store", [
    ("/fhir/Patient", True), ("/dicomweb/studies", True), ("/fhir/metadata", False),
    ("/fhir/.well-known/smart-configuration", False), ("/healthz", False)])
def test_clinical_answers_are_never_cached_nor_sniffed(client, path, no_store):
    r = client.get(path)
    assert r.status_code in (200, 204), r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (r.headers.get("cache-control") == "no-store") is no_store


def test_large_fhir_answers_are_gzipped_when_accepted(client):
    big = client.get("/fhir/metadata", headers={"Accept-Encoding": "gzip"})
    assert big.status_code == 200 and big.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in big.headers["vary"].lower()
    assert big.json()["resourceType"] == "CapabilityStatement"  # decoded by the client
    plain = client.get("/fhir/metadata", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    small = client.post("/fhir/Patient", json=PATIENT, headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 201 and "content-encoding" not in small.headers
