"""FHIR search benchmark over a synthetic remote-ultrasound corpus.

    .venv/bin/python bench/fhir_search.py [--scale 1.0] [--database-url postgresql://...]
        [--requests 400] [--keep DIR]

Generates 10,000 Patients, 50,000 ServiceRequests, 50,000 ImagingStudies, 50,000
DiagnosticReports and 300,000 Observations (about 460,000 resources at --scale 1), loads them
through `sonobridge serve` in transaction bundles of 100 (the ingest rate includes indexing), then
runs each query of the issue's table with 8 concurrent clients and reports p50/p95, the number
of SQL statements per search page (for page sizes 10 and 100), and the ingest rate.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, fresh_postgres_url, peak_rss_mb, start, stop

CONCURRENCY = 8
BUNDLE = 100
NATIONAL_ID = "urn:oid:2.16.156.10011.1.3"
LOINC = ["11348-0", "11349-8", "11350-6", "11351-4", "11352-2", "11353-0", "11354-8",
         "11355-5", "11356-3", "11357-1"]
FAMILIES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"


def corpus(scale: float, seed: int = 11):
    """Yield (method, url, resource) in dependency-friendly order."""
    rng = random.Random(seed)
    n_pat, n_sr = int(10_000 * scale), int(50_000 * scale)
    obs_per_report = 6
    for i in range(n_pat):
        yield "PUT", f"Patient/pat-{i}", {
            "resourceType": "Patient", "id": f"pat-{i}",
            "identifier": [{"system": NATIONAL_ID, "value": f"3201{i:014d}"}],
            "name": [{"family": FAMILIES[i % 20], "given": [GIVEN[(i // 20) % 20]],
                      "text": FAMILIES[i % 20] + GIVEN[(i // 20) % 20]}],
            "gender": "male" if i % 2 else "female",
            "birthDate": f"{1940 + i % 70}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "managingOrganization": {"reference": f"Organization/clinic-{i % 50}"}}
    for j in range(n_sr):
        patient = f"Patient/pat-{rng.randrange(n_pat)}"
        day = 1 + j * 364 // max(n_sr, 1)
        authored = time.strftime("%Y-%m-%d", time.gmtime(1767225600 + day * 86400))
        yield "PUT", f"ServiceRequest/sr-{j}", {
            "resourceType": "ServiceRequest", "id": f"sr-{j}",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.1.99", "value": f"ACC{j:08d}"}],
            "status": "active" if j % 2 else "completed", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9",
                                 "display": "US Abdomen"}]},
            "subject": {"reference": patient},
            "authoredOn": f"{authored}T09:{j % 60:02d}:00+08:00",
            "requester": {"reference": f"Practitioner/gp-{j % 200}"}}
        yield "PUT", f"ImagingStudy/is-{j}", {
            "resourceType": "ImagingStudy", "id": f"is-{j}", "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:1.2.826.0.1.{j}"}],
            "subject": {"reference": patient}, "basedOn": [{"reference": f"ServiceRequest/sr-{j}"}],
            "started": f"{authored}T10:00:00+08:00",
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "US"}]}
        results = []
        for k in range(obs_per_report):
            oid = f"obs-{j}-{k}"
            results.append({"reference": f"Observation/{oid}"})
            yield "PUT", f"Observation/{oid}", {
                "resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": LOINC[(j + k) % 10]}]},
                "subject": {"reference": patient},
                "effectiveDateTime": f"{authored}T10:30:00+08:00",
                "valueQuantity": {"value": round(rng.uniform(1, 20), 1), "unit": "cm",
                                  "system": "http://unitsofmeasure.org", "code": "cm"}}
        yield "PUT", f"DiagnosticReport/dr-{j}", {
            "resourceType": "DiagnosticReport", "id": f"dr-{j}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9"}]},
            "subject": {"reference": patient}, "basedOn": [{"reference": f"ServiceRequest/sr-{j}"}],
            "imagingStudy": [{"reference": f"ImagingStudy/is-{j}"}], "result": results,
            "effectiveDateTime": f"{authored}T11:00:00+08:00"}


def ingest(base: str, scale: float) -> tuple[int, float]:
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    count = 0
    batch: list[dict] = []
    start_time = time.perf_counter()
    with httpx.Client(base_url=base, timeout=120) as http:
        def flush() -> None:
            r = http.post("/fhir", content=orjson.dumps(
                {"resourceType": "Bundle", "type": "transaction", "entry": batch}),
                headers=headers)
            r.raise_for_status()
            batch.clear()

        for method, url, resource in corpus(scale):
            batch.append({"resource": resource, "request": {"method": method, "url": url}})
            count += 1
            if len(batch) == BUNDLE:
                flush()
                if count % 20_000 == 0:
                    rate = count / (time.perf_counter() - start_time)
                    print(f"  loaded {count:,} ({rate:,.0f}/s)", flush=True)
        if batch:
            flush()
    return count, time.perf_counter() - start_time


def queries(scale: float) -> dict[str, callable]:
    n_pat = int(10_000 * scale)
    return {
        "Patient?identifier=…": lambda r: f"/fhir/Patient?identifier={NATIONAL_ID}|"
                                          f"3201{r.randrange(n_pat):014d}",
        "ServiceRequest?status=active&authored=ge…&_count=50&_sort=-authored":
            lambda r: f"/fhir/ServiceRequest?status=active&authored=ge2026-{r.randrange(1, 12):02d}"
                      "-01&_count=50&_sort=-authored",
        "ImagingStudy?patient=…&_revinclude=DiagnosticReport:imaging-study":
            lambda r: f"/fhir/ImagingStudy?patient=Patient/pat-{r.randrange(n_pat)}"
                      "&_revinclude=DiagnosticReport:imaging-study",
        "DiagnosticReport?subject.identifier=…&_include=DiagnosticReport:result":
            lambda r: f"/fhir/DiagnosticReport?subject.identifier={NATIONAL_ID}|"
                      f"3201{r.randrange(n_pat):014d}&_include=DiagnosticReport:result",
        "Observation?code=…&value-quantity=gt5":
            lambda r: f"/fhir/Observation?code=http://loinc.org|{r.choice(LOINC)}"
                      "&value-quantity=gt5",
        "Patient/{id}/$everything":
            lambda r: f"/fhir/Patient/pat-{r.randrange(n_pat)}/$everything",
        "Observation?_summary=count": lambda r: "/fhir/Observation?_summary=count",
    }


async def load_test(base: str, make_url, total: int) -> dict[str, float]:
    rng = random.Random(3)
    latencies: list[float] = []
    statements: list[int] = []
    urls = [make_url(rng) for _ in range(total)]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        for url in urls[:8]:  # warm-up
            await http.get(url)

        async def worker(mine: list[str]) -> None:
            for url in mine:
                t0 = time.perf_counter()
                r = await http.get(url)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
                statements.append(int(r.headers.get("x-search-statements", "0")))

        await asyncio.gather(*(worker(urls[i::CONCURRENCY]) for i in range(CONCURRENCY)))
    latencies.sort()
    return {"p50": statistics.median(latencies) * 1000,
            "p95": latencies[int(len(latencies) * 0.95)] * 1000,
            "statements": max(statements)}


def statements_by_page_size(base: str) -> list[tuple[int, int]]:
    out = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for size in (10, 100):
            r = http.get(f"/fhir/DiagnosticReport?status=final&_count={size}"
                         "&_include=DiagnosticReport:result&_include=DiagnosticReport:subject"
                         "&_revinclude=ImagingStudy:basedon")
            out.append((size, int(r.headers["x-search-statements"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--requests", type=int, default=400, help="requests per query")
    parser.add_argument("--keep", type=Path, default=None,
                        help="data directory to reuse (SQLite): skips loading when present")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sonobridge-search-"))
    reuse = args.keep is not None and (work / "data" / "sonobridge.db").exists()
    env = {"SONOBRIDGE_DATA_DIR": str(work / "data"), "SONOBRIDGE_LOG_LEVEL": "warning"}
    cleanup = None
    if args.database_url:
        env["SONOBRIDGE_DATABASE_URL"], cleanup = fresh_postgres_url(args.database_url)
        reuse = False
    port = free_port()
    server = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"], env,
                   f"http://127.0.0.1:{port}/healthz", work / "server.log")
    base = f"http://127.0.0.1:{port}"
    db = "PostgreSQL" if args.database_url else "SQLite"
    try:
        if not reuse:
            count, elapsed = ingest(base, args.scale)
            print(f"ingest ({db}): {count:,} resources in {elapsed:.0f}s = "
                  f"{count / elapsed:,.0f} resources/s with indexing")
            if args.database_url:  # what autovacuum would do soon after a bulk load
                from sqlalchemy import text

                from sonobridge.store.db import make_engine

                engine = make_engine(env["SONOBRIDGE_DATABASE_URL"])
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM ANALYZE"))
                engine.dispose()
        print(f"\n| query ({db}, {CONCURRENCY} clients, {args.requests} requests) "
              "| p50 ms | p95 ms | SQL statements |")
        print("| --- | ---: | ---: | ---: |")
        for name, make_url in queries(args.scale).items():
            result = asyncio.run(load_test(base, make_url, args.requests))
            print(f"| `{name}` | {result['p50']:.1f} | {result['p95']:.1f} | "
                  f"{result['statements']} |", flush=True)
        print("\nSQL statements per page (3 includes):",
              ", ".join(f"_count={s}: {n}" for s, n in statements_by_page_size(base)))
        print(f"peak server memory (VmHWM): {peak_rss_mb(server.pid):.0f} MB")
    finally:
        stop(server)
        if cleanup:
            cleanup()


if __name__ == "__main__":
    main()
