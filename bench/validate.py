"""$validate benchmark: a profiled consultation request (SonoConsultationRequest) checked in
process and over HTTP; the issue's target is p50 <= 5 ms.

    .venv/bin/python bench/validate.py [--n 2000] [--http-n 1000]

In process (one thread, warm caches):
  1. the profile alone (``ProfileRegistry.validate``: snapshot walk, slices, extension
     profiles, required bindings, FHIRPath invariants);
  2. the R4 structure alone (``core.validation.validate``, what every write already pays);
  3. the whole ``$validate`` operation (``core.operations.invoke``: 2 + 1 + the outcome).
Over HTTP (``sonobridge serve``, SQLite, one sequential httpx client, keep-alive):
  4. ``POST /fhir/ServiceRequest/$validate`` of the profiled request;
  5. the same resource without ``meta.profile`` (structure only), as the in-run baseline;
  6. ``POST /fhir/ServiceRequest`` of the profiled request (validated on write, stored).
Prints p50 / p95 / mean per line.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from _server import free_port, start, stop

from sonobridge.conformance.ig.content import examples

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def profiled_request() -> dict[str, Any]:
    res = copy.deepcopy(next(e for e in examples() if e["id"] == "example-consultation-request"))
    del res["id"]
    return res


def timings(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm-up
        fn()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return (f"{label:<58} p50 {statistics.median(ms):7.3f} ms   p95 {p95:7.3f} ms   "
            f"mean {statistics.fmean(ms):7.3f} ms   (n={len(ms)})")


def in_process(n: int) -> list[str]:
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings
    from sonobridge.core.operations import OperationCall
    from sonobridge.core.profiles import registry_of
    from sonobridge.core.validation import validate as validate_structure

    resource = profiled_request()
    url = resource["meta"]["profile"][0]
    with tempfile.TemporaryDirectory() as tmp:
        core = open_app_core(Settings(data_dir=Path(tmp), auth="disabled", audit=False))
        try:
            registry = registry_of(core)
            assert registry.validate(resource, url) == []
            call = OperationCall(core.server, "validate", "type", "POST", "ServiceRequest",
                                 body=resource)
            answer = core.operations.invoke(call)
            assert answer.status == 200 and isinstance(answer.body, dict)
            assert answer.body["issue"][0]["severity"] == "information", answer.body
            return [
                line("in process: profile only (registry.validate)",
                     timings(lambda: registry.validate(resource, url), n)),
                line("in process: R4 structure only (core.validation)",
                     timings(lambda: validate_structure(resource, "ServiceRequest"), n)),
                line("in process: $validate operation (structure + profile)",
                     timings(lambda: core.operations.invoke(call), n)),
            ]
        finally:
            core.close()


def over_http(n: int) -> list[str]:
    resource = profiled_request()
    plain = {k: v for k, v in resource.items() if k != "meta"}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"],
                     {"SONOBRIDGE_DATA_DIR": tmp}, f"{base}/healthz", Path(tmp) / "server.log")
        try:
            with httpx.Client(base_url=f"{base}/fhir", headers=HEADERS, timeout=30) as http:
                profiled_bytes = orjson.dumps(resource)
                plain_bytes = orjson.dumps(plain)

                def post(path: str, content: bytes, status: int) -> None:
                    r = http.post(path, content=content)
                    if r.status_code != status:
                        raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")

                checked = http.post("/ServiceRequest/$validate", content=profiled_bytes).json()
                assert checked["issue"][0]["severity"] == "information", checked
                return [
                    line("HTTP: POST ServiceRequest/$validate (profiled)",
                         timings(lambda: post("/ServiceRequest/$validate", profiled_bytes,
                                              200), n)),
                    line("HTTP: POST ServiceRequest/$validate (no profile: baseline)",
                         timings(lambda: post("/ServiceRequest/$validate", plain_bytes, 200),
                                 n)),
                    line("HTTP: POST ServiceRequest (profiled, validated and stored)",
                         timings(lambda: post("/ServiceRequest", profiled_bytes, 201), n)),
                ]
        finally:
            stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="in-process iterations")
    parser.add_argument("--http-n", type=int, default=1000, help="HTTP requests per line")
    args = parser.parse_args()
    print("$validate of a profiled ServiceRequest (SonoConsultationRequest); target p50 <= 5 ms")
    for text in in_process(args.n):
        print(text)
    for text in over_http(args.http_n):
        print(text)


if __name__ == "__main__":
    main()
