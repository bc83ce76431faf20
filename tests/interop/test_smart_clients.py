"""Real SMART clients against a live server set up with the CLI, as an integrator would.

- the Python ``fhirclient`` package as a backend service (private_key_jwt, RS384) and as a
  standalone-launch app (it sends PKCE S256 and finds the endpoints only through the
  CapabilityStatement's oauth-uris extension);
- the npm ``fhirclient`` library (Node adapter) doing a standalone launch with PKCE required,
  installed by this test's setup with ``npm install --omit=peer``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.live import free_port, serve

PASSWORD = "Ultra-Sound-2026"
INTEROP = Path(__file__).parent


class Live:
    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        self.env = env

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "sonobridge", *args], input=stdin,
                                capture_output=True, text=True, env=self.env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def client(self, *args: str) -> dict:
        return json.loads(self.cli("client", "add", *args, "--json"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("live-auth")
    db = f"sqlite:///{work / 'sonobridge.db'}"
    with serve(db, work, "--no-sample", SONOBRIDGE_AUTH="enabled",
               SONOBRIDGE_AUDIT="on") as (base, _log):
        env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
               "SONOBRIDGE_DATABASE_URL": db}
        world = Live(base, env)
        world.cli("user", "add", "sono1", "--role", "sonographer", "--fhir-user",
                  "Practitioner/pr1", "--password-stdin", stdin=PASSWORD + "\n")
        seeder = world.client("--name", "Seeder", "--type", "confidential-symmetric",
                              "--scope", "system/*.cruds")
        token = httpx.post(f"{base}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.cruds"},
            auth=(seeder["client_id"], seeder["client_secret"])).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for resource in (
                {"resourceType": "Patient", "id": "p1", "name": [{"family": "Li"}]},
                {"resourceType": "Patient", "id": "p2", "name": [{"family": "Wang"}]},
                {"resourceType": "Observation", "id": "o1", "status": "final",
                 "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}},
                {"resourceType": "Observation", "id": "o2", "status": "final",
                 "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}}):
            r = httpx.put(f"{base}/fhir/{resource['resourceType']}/{resource['id']}",
                          json=resource, headers=headers)
            assert r.status_code in (200, 201), r.text
        yield world


def _fields(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(k), html.unescape(v)) for k, v in
            re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)]


def browser(http: httpx.Client, base: str, authorize_url: str, patient: str) -> str:
    """A user's browser: log in, pick the patient, allow; returns the app's callback URL."""
    login = http.get(authorize_url)
    assert login.status_code == 200 and 'name="username"' in login.text, login.text[:500]
    form = _fields(login.text)
    form = [(k, v) for k, v in form if k != "_action"] + [
        ("_action", "login"), ("username", "sono1"), ("password", PASSWORD)]
    consent = http.post(f"{base}/auth/authorize", data=dict(form))
    assert consent.status_code == 200 and "_csrf" in consent.text, consent.text[:500]
    allow = http.post(f"{base}/auth/authorize",
                      data={**dict(_fields(consent.text)), "_action": "allow",
                            "patient_id": patient})
    assert allow.status_code == 302, allow.text[:500]
    return allow.headers["location"]


def test_python_fhirclient_backend_service(live, tmp_path):
    from fhirclient import client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    key = RSAKey.generate_key(2048, parameters={"kid": "backend-1", "alg": "RS384"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    registered = live.client("--name", "Py backend", "--type", "confidential-asymmetric",
                             "--jwks-file", str(jwks), "--scope",
                             "system/Patient.rs system/Observation.rs")
    cid = registered["client_id"]
    assertion = jwt.encode(
        {"alg": "RS384", "kid": "backend-1", "typ": "JWT"},
        {"iss": cid, "sub": cid, "aud": f"{live.base}/auth/token",
         "exp": int(time.time()) + 240, "jti": str(uuid.uuid4())}, key, algorithms=["RS384"])
    smart = client.FHIRClient(settings={
        "app_id": cid, "api_base": f"{live.base}/fhir", "jwt_token": assertion,
        "scope": "system/Patient.rs system/Observation.rs"})
    smart.prepare()
    smart.authorize()
    assert Patient.read("p1", smart.server).name[0].family == "Li"
    found = Observation.where(struct={"subject": "Patient/p2"}).perform_resources(smart.server)
    assert [o.id for o in found] == ["o2"]
    # the same assertion again: its jti was used
    again = client.FHIRClient(settings={"app_id": cid, "api_base": f"{live.base}/fhir",
                                        "jwt_token": assertion, "scope": "system/Patient.rs"})
    again.prepare()
    with pytest.raises(Exception):  # noqa: B017 - fhirclient raises a bare HTTPError
        again.authorize()


def test_python_fhirclient_standalone_launch(live):
    from fhirclient import client
    from fhirclient.models.observation import Observation

    redirect = "http://127.0.0.1:9/callback"
    registered = live.client("--name", "Py app", "--type", "public", "--redirect-uri",
                             redirect, "--scope", "launch/patient patient/*.rs openid fhirUser")
    smart = client.FHIRClient(settings={
        "app_id": registered["client_id"], "api_base": f"{live.base}/fhir",
        "redirect_uri": redirect, "scope": "patient/*.rs openid fhirUser"})
    url = smart.authorize_url
    assert "code_challenge_method=S256" in url and url.startswith(f"{live.base}/auth/authorize")
    with httpx.Client() as http:
        callback = browser(http, live.base, url, "p1")
    assert callback.startswith(redirect)
    smart.handle_callback(callback)
    assert smart.patient_id == "p1"
    found = Observation.where(struct={"patient": "p1"}).perform_resources(smart.server)
    assert [o.id for o in found] == ["o1"]
    with pytest.raises(Exception):  # noqa: B017 - p2 is outside the compartment: 403
        Observation.read("o2", smart.server)


@pytest.fixture(scope="module")
def node_app() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        if os.environ.get("SONOBRIDGE_TEST_REQUIRE_POSTGRES") == "1":  # CI: peers must run
            pytest.fail("node and npm are needed for the npm fhirclient test")
        pytest.skip("node/npm not installed: the npm fhirclient test cannot run")
    if not (INTEROP / "node_modules" / "fhirclient").is_dir():
        result = subprocess.run([npm, "install", "--omit=peer", "--no-audit", "--no-fund"],
                                cwd=INTEROP, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    return INTEROP / "smart_app.js"


def test_npm_fhirclient_standalone_launch_with_pkce(live, node_app):
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    registered = live.client("--name", "JS app", "--type", "public", "--redirect-uri",
                             redirect, "--scope", "launch/patient patient/*.rs openid fhirUser")
    app = subprocess.Popen(["node", str(node_app), str(port), f"{live.base}/fhir",
                            registered["client_id"]], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        assert app.stdout is not None and "ready" in app.stdout.readline()
        with httpx.Client() as http:
            start = http.get(f"http://127.0.0.1:{port}/launch")
            assert start.status_code == 302, start.text
            authorize = start.headers["location"]
            assert "code_challenge_method=S256" in authorize
            callback = browser(http, live.base, authorize, "p1")
            done = http.get(callback, timeout=30)
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["patient"] == "p1" and result["observations"] == ["o1"]
        assert "patient/*.rs" in result["scope"]
        assert result["fhirUser"].endswith("/fhir/Practitioner/pr1")
    finally:
        app.terminate()
        app.wait(timeout=10)
