"""DICOMweb benchmark: SonoBridge against Orthanc (+ DICOMweb plugin), same data, same run.

    .venv/bin/python bench/dicomweb.py [--cines 50] [--series-size 600] [--skip-1gb]

Both servers are started here on free loopback ports with empty temporary storage (Orthanc
from the Debian packages `orthanc` and `orthanc-dicomweb`, installed if missing; SonoBridge
with SQLite). Test data (bench/_dicom_data.py): N ultrasound cines of 600x800x120 JPEG frames
(about 10 MB, each its own study) and one study with a series of single-frame 256x256 JPEG
instances. Both servers get the same bytes through STOW-RS.

Measured per server (median and p95; ratio = Orthanc time / SonoBridge time, or SonoBridge
throughput / Orthanc throughput, so > 1 means SonoBridge is faster):

* STOW-RS of one cine per request: MB/s over the N uploads.
* frame N in its stored encoding (transfer-syntax=*): random instance and frame, sequential.
* frame N decoded to native pixels: distinct random (instance, frame) pairs, sequential,
  capped in total time per server.
* a viewer's cine load: all frames of one instance, one request per frame, 6 in parallel,
  stored encoding; total time per instance, on instances no earlier test touched.
* series metadata (WADO-RS /metadata) of the big series.
* QIDO-RS studies?ModalitiesInStudy=US over all studies.
* whole-instance WADO-RS (stored transfer syntax), body streamed: GB/s.
* STOW of a ~1 GB native RGB cine, streamed from a file: time and the server's peak memory
  (VmHWM, reset just before the upload through /proc/PID/clear_refs where the kernel allows).

Measured as a viewer meets the servers (the default): SonoBridge with its default settings
(authorization on, a user's bearer token on every request, the audit trail on), every request
with a browser's headers, and the two servers' requests interleaved one by one (the order
alternating) after the same stores, so that drift and the other work on the machine hit both
alike. ``--legacy`` measures as the first versions of this script did (authorization and audit
off, bare headers, one server after the other) to show what that method leaves out.

Binary retrieves send Accept-Encoding: identity; JSON requests send gzip, as a browser does.
Every response is checked (status 200, JPEG SOI at the start of stored frames, frame size of
decoded frames, result counts) so the numbers are real work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _dicom_data as data
from _server import free_port, peak_rss_mb, start, stop

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN = "libOrthancDicomWeb.so"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
FRAME_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAME_DECODED = 'multipart/related; type="application/octet-stream"'
INSTANCE = 'multipart/related; type="application/dicom"; transfer-syntax=*'
BINARY = {"Accept-Encoding": "identity"}
JSON_HEADERS = {"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}
# What a browser sends with each request of a web viewer (besides Accept and Authorization).
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36",
    "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
    "Referer": "https://viewer.example.org/viewer?StudyInstanceUIDs=1.2.3",
    "Origin": "https://viewer.example.org",
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"', "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"', "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty", "Cache-Control": "no-cache", "Pragma": "no-cache",
}
ROWS, COLS = 600, 800
VIEWER_PARALLEL = 6


class Failure(Exception):
    """A response that is not what the benchmark needs; the message is the evidence."""


@dataclass
class Server:
    name: str
    root: str  # DICOMweb root URL
    proc: subprocess.Popen
    log: Path
    problems: list[str] = field(default_factory=list)
    dicom_port: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request


def client_for(server: Server) -> httpx.Client:
    return httpx.Client(timeout=120, headers=server.headers)


@dataclass
class Row:
    operation: str
    unit: str  # "ms", "s", "MB/s", "GB/s", "MB"
    higher_is_better: bool
    values: dict[str, list[float] | str] = field(default_factory=dict)  # or an error text


# --------------------------------------------------------------------------- servers


def plugin_dir() -> str | None:
    for folder in PLUGIN_DIRS:
        if Path(folder, PLUGIN).exists():
            return folder
    return None


def ensure_orthanc() -> str:
    """Install orthanc + orthanc-dicomweb if missing; return the plugin folder."""
    if not Path(ORTHANC).exists() or plugin_dir() is None:
        install = ["apt-get", "install", "-y", "orthanc", "orthanc-dicomweb"]
        if subprocess.run(install, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
            subprocess.run(install, check=True, capture_output=True)
    folder = plugin_dir()
    if folder is None:
        raise SystemExit(f"{PLUGIN} not found in {PLUGIN_DIRS}")
    return folder


def start_orthanc(work: Path, extra: dict | None = None) -> Server:
    """Orthanc with its DICOMweb plugin; ``extra`` settings (e.g. DicomModalities) merged."""
    http_port, dicom_port = free_port(), free_port()
    storage = work / "orthanc"
    config = {
        "Name": "bench", "HttpPort": http_port, "DicomPort": dicom_port,
        "StorageDirectory": str(storage / "storage"), "IndexDirectory": str(storage / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [ensure_orthanc()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        **(extra or {}),
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = work / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORTHANC, str(path)], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"Orthanc did not start, see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    version = httpx.get(f"{base}/system").json().get("Version")
    plugins = httpx.get(f"{base}/plugins").json()
    if "dicom-web" not in plugins:
        raise SystemExit(f"Orthanc {version} started without the DICOMweb plugin: {plugins}")
    return Server(f"Orthanc {version}", f"{base}/dicom-web", proc, log, dicom_port=dicom_port)


def start_sonobridge(work: Path, legacy: bool = False) -> Server:
    """SonoBridge on its default settings (authorization and audit on), with a remote
    expert's token (``user/*.rs``, what a viewer holds) and a system token for the stores;
    ``legacy``: authorization and audit off, as the first versions of this script ran it."""
    port = free_port()
    data_dir = work / "sonobridge"
    env = {"SONOBRIDGE_DATA_DIR": str(data_dir), "SONOBRIDGE_LOG_LEVEL": "warning",
           "SONOBRIDGE_AUTH": "disabled" if legacy else "enabled",
           "SONOBRIDGE_AUDIT": "off" if legacy else "on"}
    log = work / "sonobridge.log"
    proc = start(["-m", "sonobridge", "serve", "--port", str(port), "--no-sample"], env,
                 f"http://127.0.0.1:{port}/healthz", log)
    server = Server("SonoBridge", f"http://127.0.0.1:{port}/dicomweb", proc, log)
    if not legacy:
        server.headers = {"Authorization": f"Bearer {_token(data_dir, port)}"}
    return server


def _token(data_dir: Path, port: int) -> str:
    """A token as the authorization server would issue it after a login: minted with the
    server's own keys (the login page and a TOTP are not what is measured here)."""
    from sonobridge.app.compose import open_gateway
    from sonobridge.config import Settings

    base = f"http://127.0.0.1:{port}"
    gateway = open_gateway(Settings(data_dir=data_dir), run_migrations=False)
    try:
        accounts = gateway.auth.accounts
        client, _ = accounts.add_client("bench viewer", "public", "openid fhirUser user/*.cruds",
                                        redirect_uris=["https://viewer.example.org/cb"])
        user = accounts.add_user("bench.expert", "remote-expert", "Bench-Viewer-2026-long")
        return gateway.auth.tokens.issue(
            client=client, user=user, scope="openid fhirUser user/*.cruds",
            audience=f"{base}/fhir", issuer=base, context={}, grant="bench",
            refresh=False)["access_token"]
    finally:
        gateway.close()


# --------------------------------------------------------------------------- HTTP helpers


def evidence(response: httpx.Response, what: str) -> str:
    try:
        body = response.text[:300].replace("\n", " ")
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        body = "(body not read)"
    return (f"{what}: {response.request.method} {response.request.url} "
            f"(Accept: {response.request.headers.get('accept')}) -> "
            f"{response.status_code} {response.headers.get('content-type')} {body}")


def expect_200(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code != 200:
        raise Failure(evidence(response, what))
    return response


def parts_of(body: bytes, content_type: str) -> list[bytes]:
    """The payloads of a multipart/related body (or the body itself if not multipart)."""
    if not content_type.startswith("multipart/"):
        return [body]
    found = re.search(r'boundary="?([^";\s]+)"?', content_type)
    if not found:
        raise Failure(f"multipart answer without boundary: {content_type}")
    delimiter = b"--" + found.group(1).encode()
    out = []
    for chunk in body.split(delimiter)[1:-1]:
        _, _, payload = chunk.partition(b"\r\n\r\n")
        out.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return out


def stored_frame_url(server: Server, inst: data.Instance, n: int) -> str:
    return (f"{server.root}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
            f"/frames/{n}")


def check_jpeg_frame(response: httpx.Response) -> None:
    expect_200(response, "stored frame")
    parts = parts_of(response.content, response.headers.get("content-type", ""))
    if len(parts) != 1 or not parts[0].startswith(b"\xff\xd8"):
        raise Failure(evidence(response, "stored frame is not one JPEG (no SOI)"))


def multipart_body(payloads: list[bytes]) -> tuple[bytes, str]:
    boundary = f"bench-{uuid.uuid4().hex}"
    chunks = []
    for payload in payloads:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   payload, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), stow_type(boundary)


def stow_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def check_stow(response: httpx.Response, count: int) -> None:
    expect_200(response, "STOW-RS")
    body = response.json()
    stored = (body.get("00081199") or {}).get("Value") or []
    failed = (body.get("00081198") or {}).get("Value") or []
    if failed or len(stored) != count:
        raise Failure(evidence(response, f"STOW-RS stored {len(stored)} of {count}"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- loading


def stow_cines(server: Server, http: httpx.Client, cines: list[data.Instance]) -> list[float]:
    """One cine per request; MB/s of each upload."""
    rates = []
    for inst in cines:
        body, ctype = multipart_body([inst.data])
        t0 = time.perf_counter()
        response = http.post(f"{server.root}/studies", content=body,
                             headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        seconds = time.perf_counter() - t0
        check_stow(response, 1)
        rates.append(len(body) / seconds / 1e6)
    return rates


def stow_series(server: Server, http: httpx.Client, series: list[data.Instance],
                 batch: int = 50) -> list[float]:
    """``batch`` instances per request; seconds of each request."""
    times = []
    for i in range(0, len(series), batch):
        group = series[i:i + batch]
        body, ctype = multipart_body([inst.data for inst in group])
        t0 = time.perf_counter()
        response = http.post(f"{server.root}/studies", content=body,
                             headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        times.append(time.perf_counter() - t0)
        check_stow(response, len(group))
    return times


# --------------------------------------------------------------------------- measurements


def stored_frames(server: Server, http: httpx.Client, pool: list[data.Instance],
                  requests: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    latencies = []
    for _ in range(requests):
        inst = rng.choice(pool)
        url = stored_frame_url(server, inst, rng.randint(1, inst.frames))
        t0 = time.perf_counter()
        response = http.get(url, headers={"Accept": FRAME_STORED, **BINARY, **BROWSER})
        latencies.append(time.perf_counter() - t0)
        check_jpeg_frame(response)
    return [s * 1000 for s in latencies]


def decoded_frames(server: Server, http: httpx.Client, pool: list[data.Instance],
                   requests: int, cap_seconds: float, seed: int = 2) -> list[float]:
    """Distinct (instance, frame) pairs so no server-side frame cache answers."""
    rng = random.Random(seed)
    pairs = rng.sample([(i, n) for i in range(len(pool)) for n in range(1, pool[i].frames + 1)],
                       requests)
    expected = ROWS * COLS * 3
    latencies = []
    deadline = time.perf_counter() + cap_seconds
    for index, n in pairs:
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        response = http.get(stored_frame_url(server, pool[index], n),
                            headers={"Accept": FRAME_DECODED, **BINARY, **BROWSER},
                            timeout=120)
        latencies.append(time.perf_counter() - t0)
        expect_200(response, "decoded frame")
        parts = parts_of(response.content, response.headers.get("content-type", ""))
        if len(parts) != 1 or len(parts[0]) != expected:
            raise Failure(evidence(response, f"decoded frame is {[len(p) for p in parts]} "
                                             f"bytes, expected one of {expected}"))
    return [s * 1000 for s in latencies]


async def _cine_load(server: Server, inst: data.Instance) -> float:
    semaphore = asyncio.Semaphore(VIEWER_PARALLEL)
    limits = httpx.Limits(max_connections=VIEWER_PARALLEL,
                          max_keepalive_connections=VIEWER_PARALLEL)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=server.headers) as http:

        async def one(n: int) -> None:
            async with semaphore:
                response = await http.get(stored_frame_url(server, inst, n), headers={
                    "Accept": FRAME_STORED, **BINARY, **BROWSER})
            check_jpeg_frame(response)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(1, inst.frames + 1)))
        return time.perf_counter() - t0


def cine_loads(server: Server, pool: list[data.Instance]) -> list[float]:
    return [asyncio.run(_cine_load(server, inst)) * 1000 for inst in pool]


def series_metadata(server: Server, http: httpx.Client, series: list[data.Instance],
                    requests: int) -> list[float]:
    first = series[0]
    url = f"{server.root}/studies/{first.study}/series/{first.series}/metadata"
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        response = http.get(url, headers={**JSON_HEADERS, **BROWSER})
        latencies.append(time.perf_counter() - t0)
        expect_200(response, "series metadata")
        if len(response.json()) != len(series):
            raise Failure(evidence(response, f"metadata has {len(response.json())} datasets, "
                                             f"expected {len(series)}"))
    return [s * 1000 for s in latencies]


def qido_studies(server: Server, http: httpx.Client, studies: int, requests: int
                 ) -> list[float]:
    url = f"{server.root}/studies"
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        response = http.get(url, params={"ModalitiesInStudy": "US"},
                            headers={**JSON_HEADERS, **BROWSER})
        latencies.append(time.perf_counter() - t0)
        expect_200(response, "QIDO studies")
        if len(response.json()) != studies:
            raise Failure(evidence(response, f"QIDO found {len(response.json())} studies, "
                                             f"expected {studies}"))
    return [s * 1000 for s in latencies]


def whole_instances(server: Server, http: httpx.Client, pool: list[data.Instance],
                    requests: int, seed: int = 3) -> list[float]:
    """GB/s of each streamed whole-instance retrieve."""
    rng = random.Random(seed)
    rates = []
    for _ in range(requests):
        inst = rng.choice(pool)
        url = f"{server.root}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
        size, head = 0, b""
        t0 = time.perf_counter()
        with http.stream("GET", url, headers={"Accept": INSTANCE, **BINARY, **BROWSER}
                         ) as response:
            if response.status_code != 200:
                response.read()
                raise Failure(evidence(response, "whole instance"))
            for chunk in response.iter_raw():
                if len(head) < 4096:
                    head += chunk[:4096]
                size += len(chunk)
        seconds = time.perf_counter() - t0
        if b"DICM" not in head or size < len(inst.data):
            raise Failure(f"whole instance {url}: {size} bytes, DICM in head: {b'DICM' in head}")
        rates.append(size / seconds / 1e9)
    return rates


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def stow_file(server: Server, path: Path) -> tuple[float, float, float, bool]:
    """Stream one Part 10 file as a STOW-RS request; (seconds, VmHWM before, after, reset)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            yield from iter(lambda: f.read(4 << 20), b"")
        yield tail

    pid = server.proc.pid
    was_reset = reset_peak(pid)
    before = peak_rss_mb(pid)
    t0 = time.perf_counter()
    response = httpx.post(f"{server.root}/studies", content=body(), timeout=900,
                          headers={**server.headers, "Content-Type": stow_type(boundary),
                                   "Content-Length": str(length),
                                   "Accept": "application/dicom+json"})
    seconds = time.perf_counter() - t0
    after = peak_rss_mb(pid)
    check_stow(response, 1)
    return seconds, before, after, was_reset


# --------------------------------------------------------------------------- driver


def interleave(row: Row, servers: list[Server], count: int,
               fn: Callable[[Server, int], list[float]]) -> None:
    """Sample ``i`` of every server, then sample ``i + 1``, the order alternating: drift and
    the machine's other work fall on both servers alike."""
    samples: dict[str, list[float]] = {server.name: [] for server in servers}
    for i in range(count):
        for server in (servers if i % 2 == 0 else servers[::-1]):
            if isinstance(row.values.get(server.name), str):
                continue  # failed before: not asked again
            try:
                samples[server.name] += fn(server, i)
                row.values[server.name] = samples[server.name]
            except (Failure, httpx.HTTPError) as exc:
                text = f"{type(exc).__name__}: {exc}" if isinstance(exc, httpx.HTTPError) \
                    else str(exc)
                row.values[server.name] = "error"
                server.problems.append(f"{row.operation}: {text}")
    for server in servers:
        print(f"  {row.operation} [{server.name}]: {summary(row.values.get(server.name, []))}",
              flush=True)


def measure(row: Row, servers: list[Server], fn: Callable[[Server], list[float]]) -> None:
    for server in servers:
        try:
            row.values[server.name] = fn(server)
        except (Failure, httpx.HTTPError) as exc:
            text = f"{type(exc).__name__}: {exc}" if isinstance(exc, httpx.HTTPError) else str(exc)
            row.values[server.name] = "error"
            server.problems.append(f"{row.operation}: {text}")
        print(f"  {row.operation} [{server.name}]: {summary(row.values[server.name])}",
              flush=True)


def summary(values: list[float] | str) -> str:
    if isinstance(values, str):
        return values
    return (f"n={len(values)} p50={statistics.median(values):.3g} "
            f"p95={percentile(values, 0.95):.3g}")


def cells(row: Row, name: str) -> tuple[str, str, float | None]:
    values = row.values.get(name, "n/a")
    if isinstance(values, str):
        return values, values, None
    mid = statistics.median(values)
    # the slow tail: 95th percentile of times, 5th percentile of throughputs
    tail = percentile(values, 0.05 if row.higher_is_better else 0.95)
    return fmt(mid), fmt(tail), mid


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: list[Row], sono: Server, orthanc: Server) -> str:
    lines = [f"| operation | {sono.name} p50 | p95 | {orthanc.name} p50 | p95 | ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        s50, s95, s = cells(row, sono.name)
        o50, o95, o = cells(row, orthanc.name)
        ratio = "—"
        if s and o:
            ratio = f"{(s / o) if row.higher_is_better else (o / s):.2f}x"
        lines.append(f"| {row.operation} ({row.unit}) | {s50} | {s95} | {o50} | {o95} | "
                     f"{ratio} |")
    return "\n".join(lines)


def log_errors(server: Server) -> list[str]:
    if not server.log.exists():
        return []
    lines = server.log.read_text(errors="replace").splitlines()
    pattern = re.compile(r"^E\d{4} |Traceback|ERROR|Exception") if "Orthanc" in server.name \
        else re.compile(r"Traceback|ERROR|Error|Exception")
    return [line[:300] for line in lines if pattern.search(line)][:20]


def run(args: argparse.Namespace, work: Path) -> None:
    t0 = time.perf_counter()
    rgb, jpeg = data.render(ROWS, COLS, args.frames)
    cines = data.cines(args.cines, jpeg, ROWS, COLS)
    series = data.single_frame_series(args.series_size)
    mb = sum(len(c.data) for c in cines) / len(cines) / 1e6
    print(f"data: {len(cines)} cines of {args.frames} frames ({mb:.1f} MB each), a series of "
          f"{len(series)} instances, in {time.perf_counter() - t0:.0f}s", flush=True)
    viewer_count = min(5, max(1, len(cines) // 5))
    pool, viewer_pool = cines[:-viewer_count], cines[-viewer_count:]

    servers: list[Server] = []
    try:
        servers.append(start_sonobridge(work, legacy=args.legacy))
        servers.append(start_orthanc(work))
        sono, orthanc = servers
        clients = {server.name: client_for(server) for server in servers}
        rows: list[Row] = []

        def add(operation: str, unit: str, fn: Callable[[Server, httpx.Client, int], list[float]],
                count: int, higher: bool = False) -> None:
            row = Row(operation, unit, higher)
            rows.append(row)
            if args.legacy:  # one server after the other, every sample of each
                measure(row, servers, lambda s: [v for i in range(count)
                                                 for v in fn(s, clients[s.name], i)])
            else:
                interleave(row, servers, count, lambda s, i: fn(s, clients[s.name], i))

        add(f"STOW-RS one {mb:.0f} MB cine per request, x{len(cines)}", "MB/s",
            lambda s, h, i: stow_cines(s, h, [cines[i]]), len(cines), higher=True)
        for server in servers:  # needed by the metadata test; a failure there is fatal
            times = stow_series(server, clients[server.name], series)
            print(f"  STOW {len(series)}-instance series, 50 per request [{server.name}]: "
                  f"{sum(times):.1f}s; per request: {' '.join(f'{t:.2f}' for t in times)}",
                  flush=True)
        add(f"frame N, stored encoding, x{args.frame_requests} sequential", "ms",
            lambda s, h, i: stored_frames(s, h, pool, 1, seed=i), args.frame_requests)
        add(f"frame N, decoded, x{args.decoded_requests} sequential", "ms",
            lambda s, h, i: decoded_frames(s, h, pool, 1, args.decoded_cap, seed=1000 + i),
            args.decoded_requests)
        add(f"cine load: {args.frames} frames, {VIEWER_PARALLEL} parallel, x{len(viewer_pool)} "
            "fresh instances", "ms total", lambda s, h, i: cine_loads(s, [viewer_pool[i]]),
            len(viewer_pool))
        add(f"series metadata, {len(series)} instances, x{args.metadata_requests}", "ms",
            lambda s, h, i: series_metadata(s, h, series, 1), args.metadata_requests)
        add(f"QIDO studies?ModalitiesInStudy=US ({len(cines) + 1} studies), "
            f"x{args.qido_requests}", "ms",
            lambda s, h, i: qido_studies(s, h, len(cines) + 1, 1), args.qido_requests)
        add(f"WADO-RS whole instance ({mb:.0f} MB), x{args.instance_requests}", "GB/s",
            lambda s, h, i: whole_instances(s, h, pool, 1, seed=i), args.instance_requests,
            higher=True)
        if not args.skip_1gb:
            rows += big_stow(servers, work, rgb, args.native_frames)
        for client in clients.values():
            client.close()
        print_report(args, rows, sono, orthanc)
    finally:
        for server in servers:
            stop(server.proc)


def big_stow(servers: list[Server], work: Path, rgb, frames: int) -> list[Row]:
    path = work / "native.dcm"
    free = shutil.disk_usage(work).free
    if free < 5 * frames * ROWS * COLS * 3:
        print(f"  1 GB STOW skipped: only {free / 1e9:.1f} GB free in {work}")
        return []
    data.write_native_cine(path, rgb, frames)
    size = path.stat().st_size
    label = f"STOW-RS streamed {size / 1e9:.2f} GB native cine"
    timing = Row(f"{label}, time", "s", False)
    memory = Row(f"{label}, server peak RSS (VmHWM)", "MB", False)
    for server in servers:
        try:
            seconds, before, after, was_reset = stow_file(server, path)
            timing.values[server.name] = [seconds]
            memory.values[server.name] = [after]
            how = "reset before upload" if was_reset else "not resettable, lifetime peak"
            print(f"  1 GB STOW [{server.name}]: {seconds:.1f}s ({size / seconds / 1e6:.0f} MB/s)"
                  f", VmHWM {before:.0f} MB before -> {after:.0f} MB after ({how})", flush=True)
        except (Failure, httpx.HTTPError) as exc:
            timing.values[server.name] = memory.values[server.name] = "error"
            server.problems.append(f"{label}: {type(exc).__name__}: {exc}")
            print(f"  1 GB STOW [{server.name}]: error {exc}", flush=True)
    path.unlink()
    return [timing, memory]


def print_report(args: argparse.Namespace, rows: list[Row], sono: Server,
                 orthanc: Server) -> None:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print("method: " + ("legacy (authorization and audit off, bare headers, sequential)"
                        if args.legacy else "as a viewer (default settings: a user's token, "
                        "audit on; browser headers; interleaved)"))
    print(f"nproc: {nproc}")
    print()
    print(table(rows, sono, orthanc))
    print()
    print("p95 column: 95th percentile of times, 5th percentile of throughputs (the slow tail).")
    print("ratio: Orthanc time / SonoBridge time, or SonoBridge / Orthanc throughput "
          "(> 1: SonoBridge faster or smaller).")
    for server in (sono, orthanc):
        found = server.problems + [f"log: {line}" for line in log_errors(server)]
        if found:
            print(f"\nproblems seen with {server.name}:")
            for line in found:
                print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cines", type=int, default=50)
    parser.add_argument("--series-size", type=int, default=600)
    parser.add_argument("--skip-1gb", action="store_true")
    parser.add_argument("--frames", type=int, default=120, help="frames per cine")
    parser.add_argument("--native-frames", type=int, default=700,
                        help="frames of the native 600x800 RGB cine (700: about 1 GB)")
    parser.add_argument("--frame-requests", type=int, default=200)
    parser.add_argument("--decoded-requests", type=int, default=30)
    parser.add_argument("--decoded-cap", type=float, default=90,
                        help="seconds per server for the decoded-frame test")
    parser.add_argument("--metadata-requests", type=int, default=50)
    parser.add_argument("--qido-requests", type=int, default=100)
    parser.add_argument("--instance-requests", type=int, default=20)
    parser.add_argument("--legacy", action="store_true",
                        help="measure as the first versions did: SonoBridge with authorization "
                             "and audit off, bare headers, one server after the other")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep server storage and logs here (default: a temporary folder)")
    args = parser.parse_args()
    if args.cines < 2:
        parser.error("--cines must be at least 2")
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        run(args, args.work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="dicomweb-bench-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
