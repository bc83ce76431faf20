"""Authorization benchmark: what a bearer token costs a read, and token endpoint throughput.

    .venv/bin/python bench/auth.py [--seconds 8] [--rounds 3]

1. Loads 10,000 Patients (and 10,000 Observations) once, into one SQLite data directory.
2. Reads random Patients by id (8 concurrent clients) against three servers on that same data,
   one at a time, interleaved for --rounds rounds so drift hits all three alike:
   - authorization disabled, no audit trail (the baseline);
   - authorization on (a bearer token on every request), no audit trail;
   - authorization on and the audit trail on (an AuditEvent per read, written in batches by a
     thread of the server's process, the default);
   - the same with the writer as a process of its own (SONOBRIDGE_AUDIT_WRITER=process).
   Reports req/s and p50/p99 per configuration and the p50 added by the token.
3. Measures ``Tokens.check`` in-process: first sight of a token (RS256 verify) and a repeat.
4. Token endpoint: 8 concurrent clients asking for client_credentials tokens for --seconds,
   with client_secret_basic and with private_key_jwt (RS384 assertions made beforehand).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, start, stop
from fhir_rest import CONCURRENCY, ingest, read_load


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "sonobridge", *args], input=stdin, text=True,
                         capture_output=True, env={**os.environ, **env}, check=True)
    return out.stdout


def serve(env: dict[str, str], work: Path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"],
                 {**env, "SONOBRIDGE_LOG_LEVEL": "warning"},
                 f"http://127.0.0.1:{port}/healthz", work / f"{name}.log")
    return proc, f"http://127.0.0.1:{port}"


async def grants(base: str, seconds: float, make_request) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def worker(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            kwargs = make_request()
            t0 = time.perf_counter()
            r = await http.post("/auth/token", **kwargs)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"token request failed: {r.status_code} {r.text[:300]}")

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def check_cost(data_dir: Path, database_url: str, token: str, base: str) -> tuple[float, float]:
    """Microseconds for Tokens.check: first sight (signature verified) and a repeat."""
    from sonobridge.app.compose import open_gateway
    from sonobridge.config import Settings

    core = open_gateway(Settings(data_dir=data_dir, database_url=database_url))
    tokens = core.auth.tokens
    tokens.sync(force=True)
    first = []
    for _ in range(200):
        tokens._valid.clear()
        t0 = time.perf_counter()
        tokens.check(token, f"{base}/fhir", base)
        first.append(time.perf_counter() - t0)
    repeat = []
    for _ in range(2000):
        t0 = time.perf_counter()
        tokens.check(token, f"{base}/fhir", base)
        repeat.append(time.perf_counter() - t0)
    core.close()
    return statistics.median(first) * 1e6, statistics.median(repeat) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sonobridge-auth-bench-"))
    database_url = f"sqlite:///{work / 'data' / 'sonobridge.db'}"
    env = {"SONOBRIDGE_DATA_DIR": str(work / "data"), "SONOBRIDGE_DATABASE_URL": database_url}

    proc, base = serve({**env, "SONOBRIDGE_AUTH": "disabled", "SONOBRIDGE_AUDIT": "off"},
                       work, "load")
    try:
        count, elapsed = ingest(base)
    finally:
        stop(proc)
    print(f"loaded {count} resources in {elapsed:.1f}s")

    import json

    secret_client = json.loads(cli(env, "client", "add", "--name", "bench", "--type",
                                   "confidential-symmetric", "--scope", "system/*.rs",
                                   "--json"))
    key = RSAKey.generate_key(2048, parameters={"kid": "bench", "alg": "RS384"})
    (work / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    jwt_client = json.loads(cli(env, "client", "add", "--name", "bench-jwt", "--type",
                                "confidential-asymmetric", "--jwks-file",
                                str(work / "jwks.json"), "--scope", "system/*.rs", "--json"))
    auth = (secret_client["client_id"], secret_client["client_secret"])

    configs = {
        "authorization off": {"SONOBRIDGE_AUTH": "disabled", "SONOBRIDGE_AUDIT": "off"},
        "bearer token": {"SONOBRIDGE_AUTH": "enabled", "SONOBRIDGE_AUDIT": "off"},
        "bearer token + audit trail": {"SONOBRIDGE_AUTH": "enabled", "SONOBRIDGE_AUDIT": "on"},
        "… with the writer as a process": {"SONOBRIDGE_AUTH": "enabled", "SONOBRIDGE_AUDIT": "on",
                                           "SONOBRIDGE_AUDIT_WRITER": "process"},
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    token = ""
    token_base = ""
    for round_no in range(args.rounds):
        for name, extra in configs.items():
            proc, base = serve({**env, **extra}, work, f"read-{round_no}")
            try:
                headers = None
                if extra["SONOBRIDGE_AUTH"] == "enabled":
                    r = httpx.post(f"{base}/auth/token", auth=auth, data={
                        "grant_type": "client_credentials", "scope": "system/*.rs"})
                    r.raise_for_status()
                    token, token_base = r.json()["access_token"], base
                    headers = {"Authorization": f"Bearer {token}"}
                results[name].append(asyncio.run(read_load(base, args.seconds, headers)))
            finally:
                stop(proc)
        print(f"round {round_no + 1}/{args.rounds} done")

    def merged(name: str) -> dict[str, float]:
        runs = results[name]
        return {key: statistics.median(r[key] for r in runs) for key in runs[0]}

    print(f"\n| read by id (SQLite, {CONCURRENCY} clients, median of {args.rounds} rounds of "
          f"{args.seconds:.0f}s) | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name in configs:
        m = merged(name)
        print(f"| {name} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    base_p50 = merged("authorization off")["p50_ms"]
    with_token = merged("bearer token")["p50_ms"] - base_p50
    with_audit = merged("bearer token + audit trail")["p50_ms"] - base_p50
    print(f"\np50 added by the bearer token: {with_token:+.2f} ms; "
          f"with the audit trail too: {with_audit:+.2f} ms")

    first_us, repeat_us = check_cost(work / "data", database_url, token, token_base)
    print(f"Tokens.check in-process: {first_us:.0f} µs first sight (RS256 verify), "
          f"{repeat_us:.1f} µs repeat (p50)")

    proc, base = serve({**env, "SONOBRIDGE_AUTH": "enabled", "SONOBRIDGE_AUDIT": "on"},
                       work, "tokens")
    try:
        basic = asyncio.run(grants(base, args.seconds, lambda: {"auth": auth, "data": {
            "grant_type": "client_credentials", "scope": "system/*.rs"}}))
        cid = jwt_client["client_id"]
        assertions = iter([jwt.encode(
            {"alg": "RS384", "kid": "bench"},
            {"iss": cid, "sub": cid, "aud": f"{base}/auth/token",
             "exp": int(time.time()) + 280, "jti": str(uuid.uuid4())}, key,
            algorithms=["RS384"]) for _ in range(int(args.seconds * 2000))])
        private = asyncio.run(grants(base, args.seconds, lambda: {"data": {
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": next(assertions)}}))
    finally:
        stop(proc)
    print(f"\n| client_credentials grants ({CONCURRENCY} clients, {args.seconds:.0f}s) | "
          "grants/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in (("client_secret_basic", basic), ("private_key_jwt (RS384)", private)):
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
