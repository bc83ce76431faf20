"""FHIR REST benchmark: ingest through transactions, then read-by-id against a bare endpoint.

    .venv/bin/python bench/fhir_rest.py [--database-url postgresql://...] [--seconds 15]

1. Starts `sonobridge serve` (one worker) on an empty store.
2. Loads 10,000 Patients and 10,000 Observations in transaction bundles of 100 entries and
   reports resources/s.
3. With 8 concurrent async httpx clients, reads random Patients by id for N seconds: throughput
   and p50/p99 latency. In the same run, the same client against a bare Starlette endpoint
   (bench/bare_app.py) that returns the same bytes from memory. Reports the ratio.
4. Reports the server's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, fresh_postgres_url, peak_rss_mb, start, stop

CONCURRENCY = 8
BUNDLE = 100


def patient(i: int) -> dict:
    return {"resourceType": "Patient", "id": f"pat-{i}",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": f"{i:018d}"}],
            "name": [{"family": "张", "given": [f"伟{i}"], "text": f"张伟{i}"}],
            "gender": "male" if i % 2 else "female", "birthDate": "1980-01-01",
            "address": [{"city": "Qingshui", "country": "CN"}]}


def observation(i: int) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "11348-0"}]},
            "subject": {"reference": f"Patient/pat-{i % 10_000}"},
            "effectiveDateTime": "2026-11-27T09:00:00+08:00",
            "valueQuantity": {"value": 14.5, "unit": "cm", "system": "http://unitsofmeasure.org",
                              "code": "cm"}}


def ingest(base: str) -> tuple[int, float]:
    entries = [{"resource": patient(i), "request": {"method": "PUT", "url": f"Patient/pat-{i}"}}
               for i in range(10_000)]
    entries += [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation(i),
                 "request": {"method": "POST", "url": "Observation"}} for i in range(10_000)]
    bundles = [orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                             "entry": entries[i:i + BUNDLE]})
               for i in range(0, len(entries), BUNDLE)]
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    with httpx.Client(base_url=base, timeout=60) as http:
        start_time = time.perf_counter()
        for payload in bundles:
            r = http.post("/fhir", content=payload, headers=headers)
            r.raise_for_status()
        elapsed = time.perf_counter() - start_time
    return len(entries), elapsed


async def read_load(base: str, seconds: float, headers: dict[str, str] | None = None
                    ) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

    async def worker(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            pid = rng.randrange(10_000)
            t0 = time.perf_counter()
            r = await http.get(f"/fhir/Patient/pat-{pid}")
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"read failed: {r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30,
                                 headers=headers) as http:
        await asyncio.gather(*(worker(http) for _ in range(5)))  # warm-up
        latencies.clear()
        stop_at = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"rps": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "requests": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sonobridge-bench-"))
    port = free_port()
    env = {"SONOBRIDGE_DATA_DIR": str(work / "data"), "SONOBRIDGE_LOG_LEVEL": "warning"}
    cleanup = None
    if args.database_url:  # a fresh schema, so every run starts empty
        env["SONOBRIDGE_DATABASE_URL"], cleanup = fresh_postgres_url(args.database_url)
    server = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"], env,
                   f"http://127.0.0.1:{port}/healthz", work / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        count, elapsed = ingest(base)
        print(f"ingest: {count} resources in {elapsed:.1f}s = {count / elapsed:,.0f} resources/s "
              f"(transactions of {BUNDLE})")
        sample = httpx.get(f"{base}/fhir/Patient/pat-1").content
        (work / "patient.json").write_bytes(sample)
        sono = asyncio.run(read_load(base, args.seconds))
        memory = peak_rss_mb(server.pid)
    finally:
        stop(server)
        if cleanup:
            cleanup()
    bare_port = free_port()
    bare = start([str(Path(__file__).parent / "bare_app.py"), str(bare_port),
                  str(work / "patient.json")], {}, f"http://127.0.0.1:{bare_port}/healthz",
                 work / "bare.log")
    try:
        ceiling = asyncio.run(read_load(f"http://127.0.0.1:{bare_port}", args.seconds))
    finally:
        stop(bare)
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\n| read by id ({db}, {CONCURRENCY} clients) | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in (("sonobridge serve", sono), ("bare Starlette, same bytes", ceiling)):
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"\nratio: {sono['rps'] / ceiling['rps']:.0%} of the bare endpoint's throughput")
    print(f"peak server memory (VmHWM): {memory:.0f} MB")


if __name__ == "__main__":
    main()
