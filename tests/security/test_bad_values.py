"""Values that made the server answer 500 or accept nonsense (security hardening, items 7, 9,
11): each now gets the protocol's 4xx, with nothing stored and no traceback in the log."""

from __future__ import annotations

import logging

import pytest

from tests.dicom_data import cine
from tests.dicomweb.helpers import stow

PATIENT = {"resourceType": "Patient", "name": [{"family": "Li"}]}


def _outcome(r, status: int = 400) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path,params", [
    ("/fhir/Patient", {"_lastUpdated": "gt9999-12-31T23:59:59Z"}),
    ("/fhir/Patient", {"_lastUpdated": "lt0000-01-01"}),
    ("/fhir/Patient", {"birthdate": "99999-01-01"}),
    ("/fhir/_history", {"_since": "9999-12-31T23:59:59.999999Z"}),
    ("/fhir/Patient/_history", {"_at": "9999-12-31T23:59:59Z"}),
    ("/fhir/_history", {"_page": "99999999999999999999.1.1"}),
    ("/fhir/_history", {"_count": "99999999999999999999"}),
    ("/fhir/Patient", {"_count": "99999999999999999999"}),
])
def test_out_of_range_values_are_400_not_500(client, path, params, caplog):
    with caplog.at_level(logging.ERROR):
        r = client.get(path, params=params)
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        _outcome(r)
    assert "Traceback" not in caplog.text


def test_qido_offset_beyond_reason_is_400(client):
    assert stow(client, [cine(frames=1)]).status_code == 200
    r = client.get("/dicomweb/studies", params={"offset": "99999999999999999999"})
    assert r.status_code == 400, r.text
    assert client.get("/dicomweb/studies", params={"offset": "1"}).status_code in (200, 204)


def test_an_extension_nested_500_deep_is_400(client):
    inner = '{"url": "http://x/e", "valueString": "v"}'
    for _ in range(500):
        inner = '{"url": "http://x/e", "extension": [' + inner + "]}"
    body = '{"resourceType": "Patient", "extension": [' + inner + "]}"
    r = client.post("/fhir/Patient", content=body.encode(),
                    headers={"Content-Type": "application/fhir+json"})
    _outcome(r)
    assert "nested" in r.text


@pytest.mark.parametrize("href", ["javascript:alert(1)", " JavaScript:alert(1)",
                                  "vbscript:x", "data:text/html;base64,PHNjcmlwdD4="])
def test_narrative_with_active_urls_is_refused(client, href):
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{href}">x</a></div>'
    r = client.post("/fhir/Patient", json={**PATIENT, "text": {"status": "generated",
                                                                "div": div}})
    _outcome(r)
    assert "narrative" in r.text


def test_narrative_outside_the_xhtml_whitelist_is_refused(client):
    for div in ('<div xmlns="http://www.w3.org/1999/xhtml"><svg><a>x</a></svg></div>',
                '<div xmlns="http://www.w3.org/1999/xhtml"><img src="x" srcset="y"/></div>',
                '<div xmlns="http://www.w3.org/1999/xhtml"><p style="background:url(x)">'
                "a</p></div>"):
        _outcome(client.post("/fhir/Patient", json={
            **PATIENT, "text": {"status": "generated", "div": div}}))
    ok = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Li <b>Na</b></p><a href="#x">x</a>' \
         '<img src="#i" alt="i"/></div>'
    assert client.post("/fhir/Patient", json={
        **PATIENT, "text": {"status": "generated", "div": ok}}).status_code == 201


def test_duplicate_full_urls_in_a_transaction_are_refused(client):
    entry = {"fullUrl": "urn:uuid:6b0f7a7e-3a1d-4c1e-9a57-0d6d1f0c9999", "resource": PATIENT,
             "request": {"method": "POST", "url": "Patient"}}
    r = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                   "entry": [entry, entry]})
    _outcome(r)
    assert "fullUrl" in r.text


@pytest.mark.parametrize("body", [
    b'{"resourceType": "Patient", "gender": "male", "gender": "female"}',
    b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, '
    b'"valueQuantity": {"value": 1e999999}}',
    b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, '
    b'"valueQuantity": {"value": 1' + b"0" * 100_000 + b"}}",
])
def test_sloppy_json_is_refused(client, body):
    r = client.post(f"/fhir/{'Patient' if b'Patient' in body else 'Observation'}",
                    content=body, headers={"Content-Type": "application/fhir+json"})
    _outcome(r)


def test_the_data_directory_is_the_servers_alone(tmp_path):
    """Item 6: data files 0600, directories 0700; TOTP seeds sealed with a key kept apart."""
    import os
    import stat

    from sonobridge.app.compose import open_gateway
    from sonobridge.config import Settings
    from sonobridge.core.policy import Caller, Policy

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    gateway = open_gateway(Settings(data_dir=data, audit=False))
    try:
        gateway.auth.accounts.add_user("expert1", "remote-expert", "Ultra-Sound-2026")
        gateway.auth.accounts.set_totp("expert1", "JBSWY3DPEHPK3PXP")
        gateway.core.resources.update(Caller(Policy.open()), "Patient", "x",  # the WAL too
                                      {"resourceType": "Patient", "id": "x"})
        import sqlite3

        with sqlite3.connect(data / "sonobridge.db") as conn:
            (stored,) = conn.execute("SELECT totp_secret FROM auth_users").fetchone()
    finally:
        gateway.close()
    assert stored.startswith("enc1:") and "JBSWY3DPEHPK3PXP" not in stored
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in os.listdir(data):
        path = data / name
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))
    key = data / "keys" / "secrets.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
