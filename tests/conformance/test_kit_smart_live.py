"""End to end: a real SonoBridge with authorization on, a user and a public client made with
the CLI, and ``sonobridge conformance run --suite smart`` driving the standalone launch over
HTTP (login form, consent and patient picker, PKCE code exchange) and the scope checks: green.
Without a user, the launch tests skip with the reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.live import free_port, serve

PASSWORD = "Kit-Sono-Launch-2026"
REDIRECT = "https://kit.example.org/callback"
LAUNCH = ("smart-launch-01", "smart-launch-02", "smart-launch-03", "smart-launch-04",
          "smart-scope-01", "smart-scope-02")


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "sonobridge", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _second_patient(mllp: int) -> None:
    """A second patient, by an ADT^A04 over MLLP (the FHIR API wants a token now)."""
    message = ("MSH|^~\\&|SBKIT|KITHOSP|SONOBRIDGE|SONOBRIDGE|20260101120000||ADT^A04^ADT_A01|"
               "KITSMART1|P|2.5.1\rEVN|A04|20260101120000\r"
               "PID|1||KITSMART1^^^KITHOSP^MR||OTHER^PATIENT||19700101|F\rPV1|1|O\r")
    with socket.create_connection(("127.0.0.1", mllp), timeout=15) as sock:
        sock.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
        answer = b""
        while not answer.endswith(b"\x1c\x0d"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert b"MSA|AA" in answer, answer


def _run(base: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str],
                                                      dict[str, dict[str, str]]]:
    done = subprocess.run(
        [sys.executable, "-m", "sonobridge", "conformance", "run", "--target", f"{base}/fhir",
         "--suite", "smart", "--json", str(out), *extra],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    report = json.loads(out.read_text())
    return done, {r["id"]: r for r in report["results"]}


def test_standalone_launch_and_scopes_against_sonobridge(tmp_path):
    mllp = free_port()
    db = f"sqlite:///{tmp_path / 'smart.db'}"
    with serve(db, tmp_path, SONOBRIDGE_AUTH="enabled",
               SONOBRIDGE_MLLP_PORT=str(mllp)) as (base, _log):
        env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(tmp_path / "data"),
               "SONOBRIDGE_DATABASE_URL": db}
        _cli(env, "user", "add", "kit.sonographer", "--role", "sonographer",
             "--password-stdin", stdin=PASSWORD + "\n")
        client = json.loads(_cli(env, "client", "add", "--name", "Conformance kit",
                                 "--type", "public", "--scope",
                                 "openid fhirUser launch/patient patient/*.rs",
                                 "--redirect-uri", REDIRECT, "--json"))
        _second_patient(mllp)
        started = time.monotonic()
        done, ids = _run(base, tmp_path / "smart.json", "--user", "kit.sonographer",
                         "--password", PASSWORD, "--client-id", client["client_id"],
                         "--redirect-uri", REDIRECT,
                         "--patient", "sample-patient")
        elapsed = time.monotonic() - started
        # Without a user the launch skips, saying what to give; the rest still runs.
        _, anonymous = _run(base, tmp_path / "none.json")
    assert done.returncode == 0, (done.stderr[-3000:], [
        (i, r["outcome"], r["message"]) for i, r in ids.items()])
    for test in (*LAUNCH, "smart-disc-01", "smart-disc-02", "smart-auth-01"):
        assert ids[test]["outcome"] == "pass", (test, ids[test]["message"])
    notes = " ".join(e["summary"] for e in ids["smart-launch-01"]["evidence"])
    assert "_csrf" in notes and "_login" in notes and "picked sample-patient" in notes
    assert "made-up" not in " ".join(e["summary"] for e in ids["smart-scope-01"]["evidence"])
    assert "verified" in " ".join(e["summary"] for e in ids["smart-launch-02"]["evidence"])
    assert all(anonymous[t]["outcome"] == "skip" and "--user" in anonymous[t]["message"]
               for t in ("smart-launch-01",))
    assert all(anonymous[t]["outcome"] == "skip" for t in LAUNCH)
    assert PASSWORD not in (tmp_path / "smart.json").read_text()  # kept out of the evidence
    assert elapsed < 30, elapsed
