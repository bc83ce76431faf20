"""The SMART team's ``bulk-data-client`` exports from a live ``sonobridge serve`` with
authorization on: a backend-services client registered with the CLI (private_key_jwt, RS384),
a system-level and a Group-level export through the async pattern, the NDJSON files loaded
into DuckDB and counted against the server's own search counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.live import serve

# The SMART team's client, copied into the project with its licence (tests/peers/).
CLIENT = Path(__file__).resolve().parents[1] / "peers" / "bulk-data-client"
# The client declares Node >=15 <19; Node 19 made the global HTTP agent keep-alive, and got 11's
# response cache (the client fetches the CapabilityStatement through it) then never settles and
# the process exits silently with status 0. Node 18's agent, preloaded, restores what it expects.
NODE18_AGENT = """const http = require("http"); const https = require("https");
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });
"""
REQUIRED = os.environ.get("SONOBRIDGE_TEST_REQUIRE_POSTGRES") == "1"  # CI: peers installed

pytestmark = pytest.mark.skipif(
    (shutil.which("node") is None or shutil.which("npm") is None or not CLIENT.is_dir())
    and not REQUIRED,
    reason="node and npm are needed for the bulk-data-client: `make peers`")


class World:
    def __init__(self, base: str, work: Path, env: dict[str, str], client: Path) -> None:
        self.base, self.work, self.env, self.client = base, work, env, client
        self.client_id = ""
        self.key: RSAKey | None = None

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "sonobridge", *args],
                                capture_output=True, text=True, env=self.env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def config(self, name: str, **options: object) -> Path:
        assert self.key is not None
        private = {**self.key.as_dict(private=True), "alg": "RS384", "kid": "k1"}
        settings = {"fhirUrl": f"{self.base}/fhir/", "tokenUrl": f"{self.base}/auth/token",
                    "clientId": self.client_id, "privateKey": private, "scope": "system/*.rs",
                    "accessTokenLifetime": 240, "reporter": "text",
                    "destination": str(self.work / name), "saveManifest": True,
                    "lenient": False, **options}
        path = self.work / f"{name}.js"
        path.write_text("module.exports = " + json.dumps(settings) + ";\n")
        (self.work / name).mkdir()
        return path

    def export(self, name: str, *args: str, **options: object) -> Path:
        config = self.config(name, **options)
        agent = self.work / "node18-agent.js"
        agent.write_text(NODE18_AGENT)
        result = subprocess.run(["node", "-r", str(agent), "built/app.js", "--config",
                                 str(config), *args],
                                cwd=self.client, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "SHOW_ERRORS": "1"})
        (self.work / f"{name}.out").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "error" not in result.stdout.lower(), result.stdout[-3000:]
        return self.work / name

    def token(self) -> str:
        import time
        import uuid

        from joserfc import jwt

        assert self.key is not None
        now = int(time.time())
        assertion = jwt.encode({"alg": "RS384", "kid": "k1", "typ": "JWT"},
                               {"iss": self.client_id, "sub": self.client_id,
                                "aud": f"{self.base}/auth/token", "exp": now + 120,
                                "jti": str(uuid.uuid4())}, self.key, algorithms=["RS384"])
        r = httpx.post(f"{self.base}/auth/token", data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def count(self, query: str) -> int:
        r = httpx.get(f"{self.base}/fhir/{query}", params={"_summary": "count"},
                      headers={"Authorization": f"Bearer {self.token()}"})
        assert r.status_code == 200, r.text
        return int(r.json()["total"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("bulk-data-client")
    client = work / "client"
    shutil.copytree(CLIENT, client, ignore=shutil.ignore_patterns("node_modules"))
    npm = subprocess.run(["npm", "install", "--omit=dev", "--no-audit", "--no-fund"],
                         cwd=client, capture_output=True, text=True, timeout=600)
    assert npm.returncode == 0, npm.stderr[-3000:]
    db = f"sqlite:///{work / 'sonobridge.db'}"
    with serve(db, work, SONOBRIDGE_AUTH="enabled") as (base, _log):
        env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
               "SONOBRIDGE_DATABASE_URL": db}
        w = World(base, work, env, client)
        w.key = RSAKey.generate_key(2048)
        jwks = work / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{**w.key.as_dict(private=False), "kid": "k1",
                                              "alg": "RS384"}]}))
        out = w.cli("client", "add", "--name", "Regional platform", "--type",
                    "confidential-asymmetric", "--scope", "system/*.rs", "--jwks-file",
                    str(jwks), "--json")
        w.client_id = json.loads(out[out.index("{"):out.rindex("}") + 1])["client_id"]
        yield w


def _ndjson(folder: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        files.setdefault(path.name.split(".")[-2], []).append(path)
    return files


def test_system_export_read_by_duckdb(world):
    import duckdb

    folder = world.export("global", "--global")
    files = _ndjson(folder)
    assert {"Patient", "ImagingStudy", "DiagnosticReport"} <= set(files), sorted(files)
    assert "AuditEvent" not in files  # system/ scopes never read the audit trail
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["requiresAccessToken"] is True
    con = duckdb.connect()
    for res_type in ("Patient", "ImagingStudy", "DiagnosticReport", "Observation"):
        if res_type not in files:
            continue
        paths = [str(p) for p in files[res_type]]
        counted = con.execute("SELECT count(*), count(DISTINCT id) FROM read_json_auto(?, "
                              "format='newline_delimited')", [paths]).fetchone()
        expected = world.count(res_type)
        assert counted == (expected, expected), (res_type, counted, expected)
        kinds = con.execute("SELECT DISTINCT resourceType FROM read_json_auto(?, "
                            "format='newline_delimited')", [paths]).fetchall()
        assert kinds == [(res_type,)]


def test_group_export_has_only_the_members(world):
    token = {"Authorization": f"Bearer {world.token()}"}
    patients = httpx.get(f"{world.base}/fhir/Patient", params={"_count": "2"},
                         headers=token).json()
    ids = [e["resource"]["id"] for e in patients["entry"]][:1]
    group = {"resourceType": "Group", "id": "cohort", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids]}
    # the backend client reads only; the group is written through the CLI-less open path:
    # a second client with write rights
    out = world.cli("client", "add", "--name", "Cohort builder", "--type",
                    "confidential-symmetric", "--scope", "system/Group.cu", "--json")
    made = json.loads(out[out.index("{"):out.rindex("}") + 1])
    r = httpx.post(f"{world.base}/auth/token", data={"grant_type": "client_credentials",
                                                     "scope": "system/Group.cu"},
                   auth=(made["client_id"], made["client_secret"]))
    assert r.status_code == 200, r.text
    put = httpx.put(f"{world.base}/fhir/Group/cohort", json=group,
                    headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert put.status_code in (200, 201), put.text
    folder = world.export("group", "--group", "cohort", "--_type", "Patient,ImagingStudy")
    files = _ndjson(folder)
    exported = [json.loads(line) for p in files["Patient"] for line in p.read_text().splitlines()]
    assert [p["id"] for p in exported] == ids
    studies = [json.loads(line) for p in files.get("ImagingStudy", [])
               for line in p.read_text().splitlines()]
    assert all(s["subject"]["reference"] == f"Patient/{ids[0]}" for s in studies)
    assert len(studies) == world.count(f"ImagingStudy?subject=Patient/{ids[0]}")
