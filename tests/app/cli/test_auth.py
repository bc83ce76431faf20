"""The user, client, keys, launch and audit commands, run as a script would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp / "data"),
           "SONOBRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}"}
    return subprocess.run([sys.executable, "-m", "sonobridge", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


def test_user_commands(tmp):
    ok = run(tmp, "user", "add", "qc1", "--role", "qc-officer", "--password-stdin",
             stdin="Quality-Control-7\n")
    assert ok.returncode == 0, ok.stderr
    weak = run(tmp, "user", "add", "qc2", "--role", "qc-officer", "--password-stdin",
               stdin="short\n")
    assert weak.returncode == 1 and "at least 12" in weak.stderr
    role = run(tmp, "user", "add", "qc3", "--role", "admin", "--password-stdin",
               stdin="Quality-Control-7\n")
    assert role.returncode == 1 and "unknown role" in role.stderr
    twice = run(tmp, "user", "add", "qc1", "--role", "trainee", "--password-stdin",
                stdin="Quality-Control-7\n")
    assert twice.returncode == 1 and "already exists" in twice.stderr
    expert = run(tmp, "user", "add", "exp1", "--role", "remote-expert", "--password-stdin",
                 stdin="Remote-Expert-2026\n")
    assert expert.returncode == 0 and "otpauth://totp/" in expert.stderr  # enrolled at once
    listing = run(tmp, "user", "list")
    assert "qc1" in listing.stdout and "remote-expert" in listing.stdout
    assert run(tmp, "user", "disable", "qc1").returncode == 0
    assert "disabled" in run(tmp, "user", "list").stdout


def test_client_commands(tmp, tmp_path):
    public = run(tmp, "client", "add", "--name", "Viewer", "--type", "public",
                 "--redirect-uri", "https://viewer.example.org/cb", "--scope",
                 "launch/patient patient/*.rs", "--json")
    assert public.returncode == 0, public.stderr
    info = json.loads(public.stdout)
    assert info["client_id"] and "client_secret" not in info
    symmetric = run(tmp, "client", "add", "--name", "HIS", "--type", "confidential-symmetric",
                    "--scope", "system/*.rs")
    assert symmetric.returncode == 0
    assert "client_id:" in symmetric.stdout and "client_secret:" in symmetric.stdout
    no_keys = run(tmp, "client", "add", "--name", "Svc", "--type", "confidential-asymmetric",
                  "--scope", "system/*.rs")
    assert no_keys.returncode == 1 and "jwks" in no_keys.stderr
    bad_scope = run(tmp, "client", "add", "--name", "X", "--type", "public",
                    "--redirect-uri", "https://x.example.org/cb", "--scope", "everything")
    assert bad_scope.returncode == 1 and "not a SMART scope" in bad_scope.stderr
    insecure = run(tmp, "client", "add", "--name", "X", "--type", "public",
                   "--redirect-uri", "http://x.example.org/cb", "--scope", "patient/*.rs")
    assert insecure.returncode == 1 and "https" in insecure.stderr
    assert run(tmp, "client", "revoke", info["client_id"]).returncode == 0
    assert "revoked" in run(tmp, "client", "list").stdout


def test_keys_launch_and_audit_commands(tmp):
    first = run(tmp, "keys", "list")
    assert first.returncode == 0 and "current" in first.stdout
    rotated = run(tmp, "keys", "rotate")
    assert rotated.returncode == 0
    assert run(tmp, "keys", "list").stdout.count("retired") == 1
    run(tmp, "user", "add", "sono9", "--role", "sonographer", "--password-stdin",
        stdin="Ultra-Sound-2026\n")
    unknown = run(tmp, "launch", "--user", "sono9", "--patient", "p1", "--app",
                  "https://app.example.org/launch")
    assert unknown.returncode == 1 and "no Patient/p1" in unknown.stderr
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core.policy import Caller, Policy

    core = open_app_core(Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'cli.db'}",
                                  audit=False))
    core.resources.update(Caller(Policy.open()), "Patient", "p1",
                          {"resourceType": "Patient", "id": "p1"})
    core.close()
    launch = run(tmp, "launch", "--user", "sono9", "--patient", "p1", "--app",
                 "https://app.example.org/launch")
    assert launch.returncode == 0, launch.stderr
    assert launch.stdout.startswith("https://app.example.org/launch?iss=")
    assert "launch=" in launch.stdout
    verified = run(tmp, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stderr


def test_dev_setup_shows_a_newcomer_how_to_get_in(tmp_path):
    import re

    import httpx

    from tests.live import serve

    first = run(tmp_path, "dev-setup")
    assert first.returncode == 0, first.stderr
    again = run(tmp_path, "dev-setup")
    command = re.search(r"curl -s -u '([^:]+):([^']+)' -d grant_type=client_credentials",
                        again.stderr.replace("\n", ""))
    assert command, again.stderr
    assert command.group(1) in first.stderr  # created once, the same client both times
    with serve(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path, SONOBRIDGE_AUTH="enabled") as (
            base, _):
        token = httpx.post(f"{base}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.rs"},
            auth=(command.group(1), command.group(2)))
        assert token.status_code == 200, token.text
        patient = httpx.get(f"{base}/fhir/Patient/sample-patient", headers={
            "Authorization": f"Bearer {token.json()['access_token']}"})
        assert patient.status_code == 200
        assert httpx.get(f"{base}/fhir/Patient/sample-patient").status_code == 401
