"""SR -> Observations benchmark: the mapping alone, and what it adds to storing an SR, with the
peer (the same SR stored by a core without the reports domain) measured in the same run.

    .venv/bin/python bench/sr.py [--srs 40] [--measurements 50] [--groups 5]

1. Mapping (pure): a TID 1500 SR (highdicom ``Comprehensive3DSR``) with ``--measurements``
   measurements in ``--groups`` groups -> Observations: p50/p95 ms and SRs/s; also the
   listener's whole read (DICOM JSON -> pydicom Dataset -> Observations).
2. Ingest (SQLite, in process, audit off): ``--srs`` such SRs, each with fresh UIDs in one
   study and its own measured values (the builder's, each scaled by a random factor: real
   SRs do not repeat each other's numbers, which the index's memo would otherwise serve),
   through the one ingest path; with the reports domain (Observations written in the
   instance's transaction) and without it (the SR kept as opaque DICOM): p50 ms each and the
   difference (issue 14 asks <= 20 ms p50 added per SR). Also the thread's CPU time per SR
   (``time.thread_time``: the ingest runs in this one thread, SQLite included), which a
   machine busy with other work disturbs far less than the wall clock.
3. WAL pages: what each SR's transaction writes to SQLite's write-ahead log, with and
   without the reports domain (deterministic; a page per B-tree page touched).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import sonobridge.mappings.sr as sr_mapping
from sonobridge.mappings.sr import map_sr
from tests.mappings.test_sr_builders import image, tid1500


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _vary(ds: Dataset, rnd: random.Random) -> Dataset:
    """Each NUM item's measured value scaled by its own random factor (0.5-1.5)."""
    for item in getattr(ds, "ContentSequence", None) or []:
        if item.get("ValueType") == "NUM" and item.get("MeasuredValueSequence"):
            measured = item.MeasuredValueSequence[0]
            value = round(float(measured.NumericValue) * rnd.uniform(0.5, 1.5), 2)
            measured.NumericValue = f"{value:g}"
            if "FloatingPointValue" in measured:
                measured.FloatingPointValue = value
        _vary(item, rnd)
    return ds


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _line(name: str, times: list[float], cpu: list[float] | None = None) -> float:
    ordered = sorted(times)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000 if len(ordered) >= 20 else ordered[-1] \
        * 1000
    extra = f"  CPU p50 {statistics.median(cpu) * 1000:7.2f} ms" if cpu else ""
    print(f"  {name:<44} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  {1000 / p50:8.1f}/s{extra}")
    return p50


def mapping(measurements: int, groups: int, n: int = 200) -> None:
    sr = tid1500(image(), measurements=measurements // groups, groups=groups)
    result = map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref="ImagingStudy/x",
                    subject_ref="Patient/p")
    print(f"1. mapping: TID 1500, {groups} groups x {measurements // groups} measurements "
          f"-> {len(result.observations)} Observations")
    _line("map_sr (pydicom Dataset -> Observations)",
          _timed(lambda: map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref="ImagingStudy/x",
                                subject_ref="Patient/p"), n))
    from sonobridge.core.imaging.metadata import instance_json

    read = dcmread(io.BytesIO(_part10(sr)))
    stored = orjson.dumps(instance_json(read, sr.StudyInstanceUID, sr.SeriesInstanceUID,
                                        sr.SOPInstanceUID, "1.2.840.10008.1.2.1", None))

    def listener_read() -> object:  # what core/reports.py does with the index row
        return map_sr(orjson.loads(stored), sop_uid=sr.SOPInstanceUID,
                      study_ref="ImagingStudy/x", subject_ref="Patient/p")

    _line("stored DICOM JSON -> Observations (listener)", _timed(listener_read, n))


def ingest(srs: int, measurements: int, groups: int, audit: bool = True) -> None:
    """The three variants run interleaved (SR i goes to each core in turn), so a machine busy
    with other work slows them alike and the differences stay comparable."""
    import sonobridge.core.domains as domains
    from sonobridge.app import warmup
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core.policy import Caller, Policy

    ev = image()
    files = [_part10(ev)]
    rnd = random.Random(14)
    for _ in range(srs):
        files.append(_part10(_vary(tid1500(ev, measurements=measurements // groups,
                                           groups=groups, sop_uid=generate_uid()), rnd)))
    print(f"2. ingest: {srs} SRs of {measurements} measurements (one study, SQLite, in "
          f"process, audit {'on' if audit else 'off'}; the variants interleaved)")
    full = domains.DOMAINS
    without = tuple(d for d in full if d not in ("sonobridge.core.reports",
                                                 "sonobridge.core.critical"))
    variants = (("with the reports domain", full, True),
                ("  same, Observations not claiming the profile", full, False),
                ("peer: without it (the SR kept opaque)", without, True))
    caller = Caller(Policy.open(), "http://bench/fhir")
    with tempfile.TemporaryDirectory() as tmp:
        cores = []
        for n, (_, attached, _claim) in enumerate(variants):
            domains.DOMAINS = attached
            settings = Settings(data_dir=Path(tmp) / str(n),
                                database_url=f"sqlite:///{tmp}/b{n}.db", auth="disabled",
                                audit=audit)
            cores.append(open_app_core(settings))
        domains.DOMAINS = full
        # As `serve` starts (app/warmup.py): models and search definitions loaded, then what
        # the start loaded frozen out of the collector's sight.
        for core in cores:
            warmup.start(core).join()
        times: list[list[float]] = [[] for _ in variants]
        cpu: list[list[float]] = [[] for _ in variants]
        try:
            for i, data in enumerate(files):
                for n, (_, _, claim) in enumerate(variants):
                    sr_mapping.CLAIM_PROFILE = claim
                    core = cores[n]
                    path = Path(tmp) / f"in-{n}-{i}.dcm"
                    path.write_bytes(data)
                    received = core.ingest.receiver.from_file(path)
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    outcome = core.ingest.ingest(received, caller, source="bench")
                    elapsed = time.perf_counter() - start
                    used = time.thread_time() - start_cpu
                    assert outcome.ok, outcome.message
                    if i > 0:  # the image first, then the SRs
                        times[n].append(elapsed)
                        cpu[n].append(used)
            sr_mapping.CLAIM_PROFILE = True
            p50 = []
            for n, (label, _, _) in enumerate(variants):
                p50.append(_line(label, times[n], cpu[n]))
                with cores[n].store.write() as writer:
                    count = len(cores[n].resources.find(writer, "Observation", [
                        ("status", "final,preliminary")], "", 100_000))
                print(f"     Observations stored: {count}")
        finally:
            for core in cores:
                core.close()
    cpu50 = [statistics.median(c) * 1000 for c in cpu]
    print(f"  added per SR (p50): {p50[0] - p50[2]:.1f} ms; without the profile claim "
          f"{p50[1] - p50[2]:.1f} ms; CPU {cpu50[0] - cpu50[2]:.1f} ms "
          f"({cpu50[1] - cpu50[2]:.1f} ms)")


def wal_pages(srs: int, measurements: int, groups: int) -> None:
    """What each SR's transaction writes to SQLite's WAL, in pages (one per B-tree page it
    touches): a steadier measure than the wall clock. The background checkpointer is held
    off so that the WAL only grows."""
    import os

    import sonobridge.core.domains as domains
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core.policy import Caller, Policy
    from sonobridge.store import db

    ev = image()
    rnd = random.Random(14)
    files = [_part10(ev)] + [_part10(_vary(tid1500(
        ev, measurements=measurements // groups, groups=groups, sop_uid=generate_uid()), rnd))
        for _ in range(srs)]
    full = domains.DOMAINS
    without = tuple(d for d in full if d not in ("sonobridge.core.reports",
                                                 "sonobridge.core.critical"))
    caller = Caller(Policy.open(), "http://bench/fhir")
    print(f"3. WAL pages written per SR (p50 of {srs}; checkpoints held off)")
    held, db.Checkpointer.round = db.Checkpointer.round, lambda self: None  # type: ignore
    try:
        for label, attached in (("with the reports domain", full),
                                ("peer: without it (the SR kept opaque)", without)):
            domains.DOMAINS = attached
            with tempfile.TemporaryDirectory() as tmp:
                wal = Path(tmp) / "w.db-wal"
                core = open_app_core(Settings(data_dir=Path(tmp) / "d", auth="disabled",
                                              database_url=f"sqlite:///{tmp}/w.db"))
                pages = []
                try:
                    for i, data in enumerate(files):
                        path = Path(tmp) / f"in-{i}.dcm"
                        path.write_bytes(data)
                        before = wal.stat().st_size if wal.exists() else 0
                        assert core.ingest.ingest(core.ingest.receiver.from_file(path), caller,
                                                  source="bench").ok
                        pages.append((os.path.getsize(wal) - before) // (4096 + 24))
                finally:
                    core.close()
                print(f"  {label:<44} {statistics.median(pages[1:]):7.0f} pages")
    finally:
        db.Checkpointer.round = held  # type: ignore[method-assign]
        domains.DOMAINS = full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--srs", type=int, default=40)
    parser.add_argument("--measurements", type=int, default=50)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--no-audit", action="store_true",
                        help="the audit trail off (it is on by default, as a server runs)")
    args = parser.parse_args()
    mapping(args.measurements, args.groups)
    ingest(args.srs, args.measurements, args.groups, audit=not args.no_audit)
    wal_pages(args.srs, args.measurements, args.groups)


if __name__ == "__main__":
    main()
