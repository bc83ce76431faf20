"""WS/T 500 CDA benchmark: documents/s made, checked and read back, and what storing the
document costs a report going final, all in one run.

    .venv/bin/python bench/cda.py [--reports 300] [--measurements 12]

1. Mapping (pure): a final ultrasound report with ``--measurements`` measurement
   Observations -> WS/T 500.6 bytes: p50/p95 ms and documents/s (issue 17 asks <= 20 ms p50).
2. Checking: the CDA R2 schema with the WS/T 500 overlay, then our rules: p50 ms, documents/s.
3. Reading back (``read_report``: check + parse into a DiagnosticReport): p50 ms, documents/s.
4. In the core (SQLite, in process): ``--reports`` reports PUT final, with the documents
   domain (Binary + DocumentReference written in the report's transaction) and, as the peer
   in the same run, a core without it: reports/s and p50 ms each.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sonobridge.mappings.cda import DocumentVersion
from sonobridge.mappings.cda.parse import read_report
from sonobridge.mappings.cda.report import ReportSources, report_document
from sonobridge.mappings.cda.validate import problems

NOW = datetime(2026, 12, 3, tzinfo=UTC)
CARD = "urn:oid:2.16.156.10011.1.3"


def _resources(measurements: int) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": "p", "identifier": [
        {"system": CARD, "value": "110101199003070011"}], "name": [{"text": "张伟"}],
        "gender": "male", "birthDate": "1990-03-07"}
    org = {"resourceType": "Organization", "id": "h", "name": "市人民医院",
           "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "H-1"}]}
    doctor = {"resourceType": "Practitioner", "id": "d", "name": [{"text": "王主任"}]}
    findings = {"resourceType": "Observation", "id": "f", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "59776-5"}]},
                "subject": {"reference": "Patient/p"},
                "valueString": "肝脏大小形态正常，包膜光整，实质回声均匀。" * 3}  # noqa: RUF001
    obs = [{"resourceType": "Observation", "id": f"m{i}", "status": "final",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "246120007",
                                 "display": "Nodule size"}], "text": f"测量 {i}"},
            "subject": {"reference": "Patient/p"},
            "valueQuantity": {"value": 10 + i / 10, "unit": "mm",
                              "system": "http://unitsofmeasure.org", "code": "mm"}}
           for i in range(measurements)]
    report = {"resourceType": "DiagnosticReport", "id": "r", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9"}]},
              "subject": {"reference": "Patient/p"},
              "effectiveDateTime": "2026-12-01T09:10:00+08:00",
              "issued": "2026-12-01T10:05:00+08:00",
              "performer": [{"reference": "Practitioner/d"}, {"reference": "Organization/h"}],
              "result": [{"reference": f"Observation/{o['id']}"} for o in [findings, *obs]],
              "conclusion": "肝脏未见明显异常。",
              "conclusionCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                              "code": "Z01.8"}]}]}
    return {"patient": patient, "org": org, "doctor": doctor, "findings": findings,
            "obs": obs, "report": report}


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _line(name: str, times: list[float]) -> None:
    p50 = statistics.median(times) * 1000
    p95 = sorted(times)[int(len(times) * 0.95) - 1] * 1000
    print(f"{name:<58} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  {1 / statistics.mean(times):8.0f}/s")


def _core_run(with_documents: bool, res: dict[str, Any], reports: int) -> list[float]:
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core import domains

    saved = domains.DOMAINS
    if not with_documents:
        domains.DOMAINS = tuple(d for d in saved if d != "sonobridge.core.documents")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), auth="disabled", audit=False)
            core = open_app_core(settings)
            try:
                caller = core.server
                for key in ("patient", "org", "doctor", "findings"):
                    r = res[key]
                    core.resources.update(caller, r["resourceType"], r["id"], r)
                for o in res["obs"]:
                    core.resources.update(caller, "Observation", o["id"], o)
                times = []
                for i in range(reports):
                    body = copy.deepcopy(res["report"])
                    body["id"] = f"r{i}"
                    start = time.perf_counter()
                    core.resources.update(caller, "DiagnosticReport", body["id"], body)
                    times.append(time.perf_counter() - start)
                if with_documents:
                    with core.store.write() as w:
                        made = core.resources.find(w, "DocumentReference",
                                                   [("status", "current")], "",
                                                   limit=reports + 1)
                    assert len(made) == reports, len(made)
                return times
            finally:
                core.close()
    finally:
        domains.DOMAINS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--measurements", type=int, default=12)
    args = parser.parse_args()
    res = _resources(args.measurements)
    sources = ReportSources(report=res["report"], patient=res["patient"], organization=res["org"],
                            verifier=res["doctor"], observations=[res["findings"], *res["obs"]])
    data = report_document(sources, DocumentVersion("s"), NOW)
    assert problems(data) == [], problems(data)
    print(f"WS/T 500.6 document: {len(data)} bytes, {args.measurements} measurements")
    n = args.reports
    _line("1. make (FHIR -> CDA bytes)",
          _timed(lambda: report_document(sources, DocumentVersion("s"), NOW), n))
    _line("2. check (CDA R2 schema + overlay, WS/T 500.6 rules)",
          _timed(lambda: problems(data), n))
    _line("3. read back (check + CDA -> DiagnosticReport)", _timed(lambda: read_report(data), n))
    _line("4a. PUT final report, documents stored (SQLite, in process)",
          _core_run(True, res, n))
    _line("4b. PUT final report, no documents domain (peer)", _core_run(False, res, n))


if __name__ == "__main__":
    main()
