"""Quality control and data out (issue 15's performance section), on SQLite: Bulk Data
``$export`` resources/s and peak RSS, ``$evaluate-measure`` for a month and for a year of
indicators, and SQL on FHIR views in rows/s.

Run: .venv/bin/python bench/quality.py [--n 10000] [--export 100000] [--studies 2000]
     [--spread] [--keep DIR]

The issue's targets (100,000 studies, 1,000,000 resources, 2 cores) are printed next to each
figure; the defaults are smaller so that a run takes minutes on a shared machine.

``$export``: ``--export`` Observations written straight to the store, then one system-level
export of them through ``ExportService`` (the job's thread writing NDJSON files, polled until
complete); peak RSS is the process's maximum resident size, taken before the other parts run.

``$evaluate-measure``: ``tests/core/qc_world.py``'s generated November, ``--studies`` studies,
one indicator (US-PR-01) for the month, then every shipped indicator for the year 2026
stratified (each MeasureReport is stratified by organization, practitioner and device), one
``$evaluate-measure`` per indicator as a client asks. Both start cold (the process's cache of
view rows, ``core/views/cache.py``, emptied first); the month is also evaluated a second time,
its rows then coming from the cache.

Views, measured in the same run, so the figures compare:
* ``parse only``: reading the 10,000 stored resources in batches and parsing their JSON (the
  floor the runner cannot go below);
* ``store → rows``: ``ViewService.run`` over the store (batches by row id, then the compiled
  view per resource) — what ``sonobridge view run`` and ``$run`` do;
* ``store → csv`` / ``→ parquet``: the same, written to a file;
* ``fhirpathpy.evaluate per column``: the naive runner (each column's expression parsed and
  evaluated with ``fhirpathpy.evaluate`` on each resource), the peer this runner is built on;
* ``$run over HTTP``: the operation through the FHIR edge (TestClient), response as ndjson.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhirpathpy import evaluate
from fhirpathpy.models import models

from sonobridge.config import Settings
from sonobridge.core.services import open_core
from sonobridge.core.views.definition import compile_view
from sonobridge.core.views.output import write
from sonobridge.core.views.service import ViewService

VIEW = {
    "resourceType": "ViewDefinition", "resource": "Observation", "status": "active",
    "select": [{"column": [
        {"name": "id", "path": "getResourceKey()", "type": "id"},
        {"name": "patient", "path": "subject.getReferenceKey(Patient)", "type": "id"},
        {"name": "code", "path": "code.coding.where(system = 'http://loinc.org').code.first()",
         "type": "code"},
        {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
        {"name": "unit", "path": "value.ofType(Quantity).code", "type": "code"},
        {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
        {"name": "study", "path": "derivedFrom.getReferenceKey(ImagingStudy).first()",
         "type": "id"}]}],
    "where": [{"path": "status = 'final'"}]}
LOINC = ["11820-8", "11984-2", "11979-2", "11963-6", "18185-9"]


def observation(i: int, rnd: random.Random) -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "observation-category", "code": "imaging"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": rnd.choice(LOINC)}]},
            "subject": {"reference": f"Patient/p{i % 500}"},
            "effectiveDateTime": f"2026-11-{1 + i % 28:02d}T10:00:00+08:00",
            "valueQuantity": {"value": round(rnd.uniform(10, 90), 1), "unit": "mm",
                              "system": "http://unitsofmeasure.org", "code": "mm"},
            "derivedFrom": [{"reference": f"ImagingStudy/s{i // 5}"}]}


def timed(label: str, n_rows_fn, results: list) -> None:
    started = time.perf_counter()
    rows = n_rows_fn()
    seconds = time.perf_counter() - started
    results.append((label, rows, seconds))
    print(f"{label:34s} {rows:>7,} rows {seconds:7.2f} s {rows / seconds:>10,.0f} rows/s",
          flush=True)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Linux: start ``VmHWM`` again from the current RSS (``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def bench_export(n: int, rnd: random.Random) -> None:
    """One system-level $export of ``n`` Observations, as a backend service would start it."""
    from sonobridge.core.export import service_of
    from sonobridge.core.operations import OperationCall

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/db.sqlite",
                            audit=False)
        core = open_core(settings)
        for chunk in range(0, n, 20_000):  # a transaction per 20,000: bounded setup memory
            with core.store.write() as writer:
                for start in range(chunk, min(n, chunk + 20_000), 1000):
                    writer.create_many("Observation", [observation(i, rnd) for i in
                                                       range(start, min(n, start + 1000))])
        service = service_of(core)
        assert service is not None
        reset_peak()
        before = vm_mb("VmRSS")
        print(f"{n:,} Observations stored; RSS before the export {before:,.0f} MB", flush=True)
        started = time.perf_counter()
        result = service.kickoff(OperationCall(
            core.server, "export", "system", "GET", query=[("_type", "Observation")],
            headers={"prefer": "respond-async"}))
        job_id = result.headers["Content-Location"].rsplit("/", 1)[1]
        while True:
            job = service.jobs.load(job_id)
            assert job is not None
            if job.state != "in-progress":
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        assert job.state == "completed", job.error
        written = sum(o.count for o in job.outputs)
        size = sum(core.blobs.size(service.jobs.file(job_id, o.file)) for o in job.outputs)
        print(f"{'$export (system, NDJSON files)':34s} {written:>7,} res  {seconds:7.2f} s "
              f"{written / seconds:>10,.0f} resources/s   (target >= 20,000/s)", flush=True)
        peak = vm_mb("VmHWM")
        print(f"  {len(job.outputs)} file(s), {size / 1e6:,.1f} MB; peak RSS during the export "
              f"{peak:,.0f} MB (+{peak - before:,.0f} MB)   (target <= 300 MB at 1,000,000 "
              "resources)", flush=True)
        core.close()


def bench_measures(studies: int, spread: bool = False, keep: Path | None = None) -> None:
    """US-PR-01 for November, then every shipped indicator for 2026 (stratified). With
    ``spread`` the generated requests are spread over 2026 (November holds a twelfth of them)
    instead of 90 % of them falling in November; with ``keep`` the database is kept in that
    directory and used again by the next run with the same world."""
    with tempfile.TemporaryDirectory() as tmp:
        where = keep if keep is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        _bench_measures(studies, spread, where)


def _bench_measures(studies: int, spread: bool, where: Path) -> None:
    from sonobridge.app import warmup
    from sonobridge.core.measures.definitions import MEASURES
    from sonobridge.core.measures.evaluate import evaluate as evaluate_report
    from sonobridge.core.measures.evaluate import period_of
    from sonobridge.core.measures.indicators import ROWS, Data
    from sonobridge.core.operations import OperationCall
    from tests.core.qc_world import stored_world

    name = f"qc-{studies}{'-spread' if spread else ''}"
    db = where / f"{name}.sqlite"
    settings = Settings(data_dir=where / name, database_url=f"sqlite:///{db}", audit=False)
    fresh = not db.exists()
    core = open_core(settings)
    if fresh:
        stored_world(core, n=studies, spread=spread)
        # What the server's checkpointer does in the background: the world is written in
        # one transaction, and reading it all through the WAL is not how a server reads.
        with core.store.reader.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    with core.store.reader.connect() as conn:
        kinds = dict(conn.exec_driver_sql(
            "SELECT res_type, count(*) FROM resources GROUP BY res_type").all())
        # Final or not: the reports of November, as the generated world's times are written.
        in_month = conn.exec_driver_sql(
            "SELECT count(*) FROM resources r JOIN resource_versions v ON v.rid = r.rid AND "
            "v.version_id = r.version_id WHERE r.res_type = 'DiagnosticReport' AND "
            "json_extract(CAST(v.content AS TEXT), '$.issued') "
            "BETWEEN '2026-10-31T16:00:00Z' AND '2026-11-30T15:59:59Z'").scalar()
    print(f"qc world{' (spread over 2026)' if spread else ''}: {sum(kinds.values()):,} "
          f"resources ({kinds.get('ImagingStudy', 0):,} studies, "
          f"{kinds.get('DiagnosticReport', 0):,} reports, "
          f"{kinds.get('QuestionnaireResponse', 0):,} QC reviews; {in_month:,} reports issued "
          f"in November){'' if fresh else ', database kept from an earlier run'}", flush=True)
    # As the server runs: its start-up warm-up (app/warmup.py) puts what is loaded out of
    # the collector's sight (gc.freeze), so that full collections do not walk it again
    # and again (measured: ~0.5 s of a month's evaluation without it). The generated
    # world is the bench's own and is dropped first.
    warmup.start(core).join()

    def evaluate(measure: str, start: str, end: str) -> None:
        result = core.operations.invoke(OperationCall(
            core.server, "evaluate-measure", "instance", "GET", "Measure", measure,
            query=[("periodStart", start), ("periodEnd", end)]))
        assert result.status == 200, result.body

    reset_peak()
    before = vm_mb("VmRSS")
    ROWS.clear()  # cold: no view rows remembered from an earlier evaluation
    started = time.perf_counter()
    evaluate("us-pr-01", "2026-11-01", "2026-11-30")
    month = time.perf_counter() - started
    print(f"{'$evaluate-measure US-PR-01, month':34s} {month:7.2f} s   (target <= 2 s at "
          f"100,000 studies; {in_month:,} reports in the month)", flush=True)
    started = time.perf_counter()
    evaluate("us-pr-01", "2026-11-01", "2026-11-30")
    again = time.perf_counter() - started
    print(f"{'  the same again (rows cached)':34s} {again:7.2f} s", flush=True)
    ROWS.clear()
    started = time.perf_counter()
    for measure in sorted(MEASURES):
        evaluate(measure, "2026-01-01", "2026-12-31")
    year = time.perf_counter() - started
    print(f"{f'$evaluate-measure all {len(MEASURES)}, a year':34s} {year:7.2f} s   "
          "(target <= 30 s at 100,000 studies; cold, one request per indicator)",
          flush=True)
    started = time.perf_counter()
    for measure in sorted(MEASURES):
        evaluate(measure, "2026-01-01", "2026-12-31")
    again = time.perf_counter() - started
    print(f"{'  the same again':34s} {again:7.2f} s", flush=True)
    ROWS.clear()
    started = time.perf_counter()
    data = Data(ViewService(core.store, core.search), core.server)
    for measure in sorted(MEASURES):
        evaluate_report(MEASURES[measure], data, period_of("2026-01-01", "2026-12-31",
                                                           core.settings.hl7_time_zone))
    year = time.perf_counter() - started
    print(f"{'  all in one call (qc report)':34s} {year:7.2f} s   (cold; one Data, as "
          "`sonobridge qc report` evaluates)", flush=True)
    del data
    peak = vm_mb("VmHWM")
    print(f"  peak RSS during the evaluations {peak:,.0f} MB (+{peak - before:,.0f} MB; "
          f"{len(ROWS):,} resources' rows cached)", flush=True)
    core.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000, help="Observations for the views")
    parser.add_argument("--export", type=int, default=100_000,
                        help="Observations for $export (0: skip)")
    parser.add_argument("--studies", type=int, default=2_000,
                        help="studies of the generated month for $evaluate-measure (0: skip)")
    parser.add_argument("--spread", action="store_true",
                        help="the generated requests spread over 2026, not 90 %% in November")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the generated database in this directory (and use it again)")
    args = parser.parse_args()
    rnd = random.Random(1)
    if args.export:
        bench_export(args.export, rnd)
    if args.studies:
        bench_measures(args.studies, args.spread, args.keep)
    if args.n:
        bench_views(args.n, rnd)


def bench_views(n: int, rnd: random.Random) -> None:
    args = argparse.Namespace(n=n)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/db.sqlite",
                            audit=False)
        core = open_core(settings)
        resources = [observation(i, rnd) for i in range(args.n)]
        with core.store.write() as writer:
            for start in range(0, args.n, 1000):
                writer.create_many("Observation", resources[start:start + 1000])
        print(f"{args.n:,} Observations stored; {Path(tmp, 'db.sqlite').stat().st_size:,} "
              "bytes of SQLite", flush=True)
        service = ViewService(core.store, core.search)
        view = compile_view(VIEW)
        results: list = []
        timed("parse only (store batches)",
              lambda: sum(1 for _ in service.resources(core.server, "Observation")), results)
        timed("store -> rows (ViewService.run)",
              lambda: sum(1 for _ in service.run(core.server, view)), results)
        timed("store -> csv", lambda: write("csv", view.columns, service.run(core.server, view),
                                            io.BytesIO()), results)
        timed("store -> parquet",
              lambda: write("parquet", view.columns, service.run(core.server, view),
                            io.BytesIO(), view.types, view.collections), results)
        r4 = models["r4"]
        columns = [(c["name"], c["path"]) for c in VIEW["select"][0]["column"]
                   if "Key" not in c["path"]]
        sample = resources[: max(1, args.n // 10)]

        def naive() -> int:
            count = 0
            for res in sample:
                if evaluate(res, "status = 'final'", {}, r4) == [True]:
                    for _, path in columns:
                        evaluate(res, path, {}, r4)
                    count += 1
            return count

        timed("fhirpathpy.evaluate per column*", naive, results)
        from starlette.testclient import TestClient

        from sonobridge.app.server import create_app

        core.close()
        with TestClient(create_app(Settings(data_dir=Path(tmp),
                                            database_url=f"sqlite:///{tmp}/db.sqlite",
                                            audit=False, auth="disabled"))) as client:
            def over_http() -> int:
                r = client.post("/fhir/ViewDefinition/$run", json={
                    "resourceType": "Parameters", "parameter": [
                        {"name": "viewResource", "resource": VIEW},
                        {"name": "_format", "valueString": "ndjson"}]},
                    headers={"Content-Type": "application/fhir+json"})
                assert r.status_code == 200, r.text
                return r.text.count("\n")

            timed("$run over HTTP (ndjson)", over_http, results)
        print(f"* over {len(sample):,} of the resources, 5 of the 7 columns (no key functions)")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
