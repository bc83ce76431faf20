"""Report PDF speed (issue 14: a report with 6 key images <= 1.5 s p50, off the request path).

    .venv/bin/python bench/report_pdf.py [--runs 20] [--images 6] [--size 600x800]

In process, SQLite: a patient, doctors, 12 measurement Observations and ``--images``
single-frame ultrasound images (JPEG, ``--size`` rows x columns) stored through the ingest
path, linked as the report's key images (Media). Then ``ReportPdf.render`` (what the queued
job runs) is timed:

* ``first``: the process's first PDF (WeasyPrint and fontconfig loading, the CJK font read);
* ``cold images``: each run with the archive's rendered-image cache emptied first, so the six
  frames are decoded, windowed and JPEG-encoded again (a report printed for the first time);
* ``warm``: the frames already rendered (a reprint, ``$pdf`` of a draft);
* the peer, in the same run: the same page without images (WeasyPrint layout and CJK subset
  alone), to show what the images cost.

Also the size of the PDF and the job end to end (``drain``: read the Task, render, store the
Binary, complete the Task).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.dicom_data import cine


def _line(name: str, times: list[float]) -> float:
    ordered = sorted(times)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000
    print(f"  {name:<40} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  (n={len(ordered)})")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", default="600x800")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.size.split("x"))

    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core.pdf.report import ReportPdf, report_pdf_of
    from sonobridge.core.policy import Caller, Policy

    caller = Caller(Policy.open(), "http://bench/fhir")
    with tempfile.TemporaryDirectory() as tmp:
        core = open_app_core(Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/b.db",
                                      auth="disabled", audit=False))
        try:
            resources = core.resources
            for body in [
                {"resourceType": "Patient", "id": "p", "gender": "female",
                 "birthDate": "1992-04-01", "name": [{"text": "王芳"}]},
                {"resourceType": "Organization", "id": "o", "name": "县人民医院超声科"},
                {"resourceType": "Practitioner", "id": "d1", "name": [{"text": "李明"}]},
                {"resourceType": "Practitioner", "id": "d2", "name": [{"text": "陈敏"}]},
            ]:
                resources.update(caller, body["resourceType"], body["id"], body)
            results = []
            for n in range(12):
                resources.update(caller, "Observation", f"m{n}", {
                    "resourceType": "Observation", "id": f"m{n}", "status": "final",
                    "code": {"text": f"测量 {n + 1}"}, "subject": {"reference": "Patient/p"},
                    "valueQuantity": {"value": 10 + n / 3, "unit": "mm"}})
                results.append({"reference": f"Observation/m{n}"})
            media = []
            for n in range(args.images):
                ds = cine("jpeg", frames=1, rows=rows, cols=cols, seed=n + 1)
                path = Path(tmp) / f"i{n}.dcm"
                ds.save_as(path, enforce_file_format=True)
                outcome = core.ingest.ingest(core.ingest.receiver.from_file(path), caller,
                                             source="bench")
                assert outcome.ok, outcome.message
                url = (f"http://bench/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                       f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1/rendered")
                resources.update(caller, "Media", f"k{n}", {
                    "resourceType": "Media", "id": f"k{n}", "status": "completed",
                    "content": {"contentType": "image/jpeg", "url": url}})
                media.append({"link": {"reference": f"Media/k{n}"}, "comment": f"图 {n + 1}"})
            report: dict[str, Any] = {
                "resourceType": "DiagnosticReport", "id": "r", "status": "final",
                "code": {"text": "产科超声检查"}, "subject": {"reference": "Patient/p"},
                "effectiveDateTime": "2026-12-01T09:00:00+08:00",
                "issued": "2026-12-01T09:30:00+08:00",
                "performer": [{"reference": "Organization/o"}],
                "resultsInterpreter": [{"reference": "Practitioner/d1"},
                                       {"reference": "Practitioner/d2"}],
                "result": results, "media": media,
                "conclusion": "宫内单活胎。胎儿大小符合孕周。\n羊水量正常。"}
            pdf = report_pdf_of(core)
            print(f"report PDF: {args.images} key images of {rows} x {cols}, 12 measurements, "
                  f"{args.runs} runs (SQLite, in process)")
            start = time.perf_counter()
            first = pdf.render(report, "r v1")
            took = 1000 * (time.perf_counter() - start)
            print(f"  {'first (loads WeasyPrint, fonts)':<40} {took:8.1f} ms  "
                  f"({len(first) // 1024} KiB)")
            cold, warm, bare = [], [], []
            no_images = {**report, "media": []}
            peer = ReportPdf(core)
            for _ in range(args.runs):
                cache = core.archive.cache  # forgotten: frames decoded and encoded again
                for key in list(cache._items):
                    cache.discard(key)
                start = time.perf_counter()
                pdf.render(report, "r v1")
                cold.append(time.perf_counter() - start)
                start = time.perf_counter()
                pdf.render(report, "r v1")
                warm.append(time.perf_counter() - start)
                start = time.perf_counter()
                peer.render({**no_images, "imagingStudy": []}, "r v1")
                bare.append(time.perf_counter() - start)
            _line("cold images (frames rendered again)", cold)
            _line("warm (frames cached)", warm)
            _line("peer: the same page without images", bare)
            with core.store.write() as writer:
                resources.update(caller, "DiagnosticReport", "r", report, writer=writer)
            start = time.perf_counter()
            done = pdf.drain()
            took = 1000 * (time.perf_counter() - start)
            print(f"  {'the queued job end to end (drain)':<40} {took:8.1f} ms  ({done} job)")
        finally:
            core.close()


if __name__ == "__main__":
    main()
