"""Bridges benchmark: DIMSE against Orthanc, HL7 orders over MLLP, all in one run.

    .venv/bin/python bench/bridges.py [--cines 50] [--images 500] [--orders 2000]
                                      [--studies 10000] [--find-requests 200]

1. C-STORE of ``--cines`` ultrasound cines (600x800x120 JPEG, about 10 MB each) by dcmtk's
   ``storescu`` in one association, to SonoBridge and to Debian's Orthanc: MB/s.
2. C-STORE of ``--images`` small single-frame images by ``storescu`` as Debian builds it (Nagle
   on: each message is two writes), to both: images/s. Per-message latency shows here.
3. C-MOVE of those images to a dcmtk ``storescp``, from both: images/s.
4. C-FIND at STUDY level over ``--studies`` studies held by both, per query kind: with a
   pynetdicom SCU on one association (latency per query), and with ``findscu``, one process
   and association per query (what a modality or a PACS does): p50/p95.
5. HL7: ``--orders`` ORM^O01 over one MLLP connection, each waiting for its ACK (each applied:
   Patient matched or created, ServiceRequest written): messages/s, without and with the audit
   trail (a second SonoBridge with ``SONOBRIDGE_AUDIT=on``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parent))
import _dicom_data as data
from _server import free_port, peak_rss_mb, start, stop
from dicomweb import ensure_orthanc, start_orthanc

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "fixtures" / "storescu-us.cfg"
FAMILIES = ["Zhang", "Wang", "Li", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"]
QUERIES: dict[str, Callable[[int], dict[str, str]]] = {
    "PatientID=<exact>": lambda i: {"PatientID": f"FIND{(i * 37) % 10000:05d}"},
    "PatientName=Wang^Patient1* (name prefix)": lambda i: {
        "PatientName": f"Wang^Patient{(i % 9) + 1}1*"},
    "StudyDate=<one day>": lambda i: {"StudyDate": f"2026{1 + i % 12:02d}{1 + i % 28:02d}"},
    "AccessionNumber=<exact>": lambda i: {"AccessionNumber": f"FA{(i * 53) % 10000:06d}"},
}
FIND_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy")


def storescu(aet: str, port: int, files: list[Path], config: bool = True,
             no_delay: bool = False) -> float:
    """One association; dcmtk in its default environment unless ``no_delay`` (then it sets
    TCP_NODELAY itself, as dcmtk does when told by that variable)."""
    args = ["storescu", *(["-xf", str(CONFIG), "US"] if config else []), "-aec", aet,
            "127.0.0.1", str(port), *map(str, files)]
    env = {**os.environ, "TCP_NODELAY": "1"} if no_delay else None
    t0 = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"storescu to {aet} failed: {result.stderr[-1000:]}")
    return elapsed


def movescu(aet: str, port: int, study: str, destination: str) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(["movescu", "-S", "-aet", "BENCH", "-aec", aet, "-aem",
                             destination, "-k", "QueryRetrieveLevel=STUDY", "-k",
                             f"StudyInstanceUID={study}", "127.0.0.1", str(port)],
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"movescu from {aet} failed: {result.stderr[-1000:]}")
    return elapsed


def orders(port: int, count: int) -> tuple[float, list[float]]:
    latencies = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        t0 = time.perf_counter()
        for i in range(count):
            message = (f"MSH|^~\\&|RIS|HOSP|USSRV|TELEUS|20261127120000||ORM^O01|BENCH{i:06d}|P"
                       f"|2.3\rPID|1||PID{i % 500:05d}^^^HOSP^MR||Bench^Patient{i % 500}||"
                       f"19800101|F\rORC|NW|P{i:06d}|F{i:06d}||SC\r"
                       f"OBR|1|P{i:06d}|F{i:06d}|US-ABD^US ABDOMEN^L|||20261127120000\r")
            start_one = time.perf_counter()
            sock.sendall(b"\x0b" + message.encode() + b"\x1c\r")
            reply = b""
            while not reply.endswith(b"\x1c\r"):
                reply += sock.recv(65536)
            latencies.append(time.perf_counter() - start_one)
            if b"MSA|AA" not in reply:
                raise SystemExit(f"order {i} not accepted: {reply[:300]!r}")
        elapsed = time.perf_counter() - t0
    return elapsed, latencies


def tiny_studies(folder: Path, count: int) -> list[Path]:
    """``count`` studies of one tiny single-frame US object each, written as Part 10 files."""
    folder.mkdir()
    pixels = np.zeros((16, 16, 3), dtype=np.uint8).tobytes()
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientID = f"FIND{i:05d}"
        ds.PatientName = f"{FAMILIES[i % 10]}^Patient{i}"
        ds.StudyDate = f"2026{1 + i % 12:02d}{1 + i % 28:02d}"
        ds.AccessionNumber = f"FA{i:06d}"
        ds.Modality = "US"
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
        ds.PixelData = pixels
        out = BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        path = folder / f"s{i:05d}.dcm"
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


def ingest_files(data_dir: Path, paths: list[Path]) -> float:
    """Through SonoBridge's one ingest path, in process (what ``sonobridge import`` does)."""
    from sonobridge.app.compose import open_app_core
    from sonobridge.config import Settings

    core = open_app_core(Settings(data_dir=data_dir, audit=False, auth="disabled"))
    ingest = core.ingest
    caller = core.server
    deferred: set[str] = set()
    t0 = time.perf_counter()
    for path in paths:
        outcome = ingest.ingest(ingest.receiver.receive([path.read_bytes()]), caller,
                                source="bench", deferred=deferred)
        if not outcome.ok:
            raise SystemExit(f"loading {path} failed: {outcome.message}")
        if len(deferred) >= 500:
            ingest.sync_studies(deferred, caller)
    ingest.sync_studies(deferred, caller)
    elapsed = time.perf_counter() - t0
    core.close()
    return elapsed


def _query(kind: str, i: int) -> dict[str, str]:
    keys = dict.fromkeys(FIND_KEYS, "")
    keys.update(QUERIES[kind](i))
    return keys


def find_pynetdicom(aet: str, port: int, requests: int) -> dict[str, tuple[float, float, int]]:
    """One association for every query, TCP_NODELAY on (as SonoBridge's own SCU does)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    from sonobridge.hie.dimse import sockets

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet,
                         evt_handlers=sockets.REQUESTOR_HANDLERS)
    if not assoc.is_established:
        raise SystemExit(f"{aet} refused the C-FIND association")
    out = {}
    for kind in QUERIES:
        times, matches = [], 0
        for i in range(requests):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            for key, value in _query(kind, i).items():
                setattr(ds, key, value)
            t0 = time.perf_counter()
            found = sum(1 for status, _ in assoc.send_c_find(ds, FIND)
                        if status and status.Status in (0xFF00, 0xFF01))
            times.append(time.perf_counter() - t0)
            matches += found
        out[kind] = _stats(times, matches // requests)
    assoc.release()
    return out


def find_findscu(aet: str, port: int, requests: int) -> dict[str, tuple[float, float, int]]:
    """One ``findscu`` process, association and query at a time, in dcmtk's default
    environment: what a modality or another PACS asking one question costs."""
    out = {}
    for kind in QUERIES:
        times, matches = [], 0
        for i in range(requests):
            keys = [arg for key, value in _query(kind, i).items()
                    for arg in ("-k", f"{key}={value}" if value else key)]
            t0 = time.perf_counter()
            result = subprocess.run(["findscu", "-S", "-aet", "BENCH", "-aec", aet, "-k",
                                     "QueryRetrieveLevel=STUDY", *keys, "127.0.0.1",
                                     str(port)], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if result.returncode != 0:
                raise SystemExit(f"findscu to {aet} failed: {result.stderr[-500:]}")
            matches += result.stderr.count("Find Response:")  # pending ones; the final is
            # "Received Final Find Response"
        out[kind] = _stats(times, matches // requests)
    return out


def _stats(times: list[float], matches: int) -> tuple[float, float, int]:
    times.sort()
    return (statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000, matches)


def process_start_ms() -> float:
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        subprocess.run(["findscu", "--version"], capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def storescp(folder: Path, port: int) -> subprocess.Popen:
    folder.mkdir()
    # +xa: accepts JPEG as stored, so that neither server transcodes
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-od", str(folder),
                             str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def sonobridge(work: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, int, int]:
    http, dicom, mllp = free_port(), free_port(), free_port()
    environ = {"SONOBRIDGE_DATA_DIR": str(work / name), "SONOBRIDGE_LOG_LEVEL": "warning",
               "SONOBRIDGE_DICOM_PORT": str(dicom), "SONOBRIDGE_MLLP_PORT": str(mllp), **env}
    proc = start(["-m", "sonobridge", "serve", "--port", str(http), "--no-sample"], environ,
                 f"http://127.0.0.1:{http}/healthz", work / f"{name}.log")
    return proc, dicom, mllp


def hl7_only(work: Path, count: int) -> None:
    for label, env in (("audit trail off", {}), ("audit trail on", {"SONOBRIDGE_AUDIT": "on"})):
        proc, _, mllp = sonobridge(work, label.replace(" ", "-"), env)
        try:
            seconds, latencies = orders(mllp, count)
        finally:
            stop(proc)
        latencies.sort()
        print(f"HL7 ({label}, empty server): {count} ORM^O01 in {seconds:.1f}s = "
              f"{count / seconds:,.0f} messages/s (p50 {statistics.median(latencies) * 1000:.2f}"
              f" ms, p95 {latencies[int(len(latencies) * 0.95)] * 1000:.2f} ms)")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cines", type=int, default=50)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--find-requests", type=int, default=200)
    parser.add_argument("--hl7-only", action="store_true",
                        help="only the HL7 orders, on an empty server (no Orthanc, no DICOM)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sonobridge-bridges-"))
    if args.hl7_only:
        hl7_only(work, args.orders)
        return
    ensure_orthanc()
    print(f"work directory: {work}", flush=True)

    _, jpeg = data.render(600, 800, 120)
    cine_dir = work / "cines"
    cine_dir.mkdir()
    cines = []
    for i, inst in enumerate(data.cines(args.cines, jpeg, 600, 800)):
        path = cine_dir / f"cine{i:03d}.dcm"
        path.write_bytes(inst.data)
        cines.append(path)
    megabytes = sum(p.stat().st_size for p in cines) / 1e6
    image_dir = work / "images"
    image_dir.mkdir()
    images = []
    series = data.single_frame_series(args.images)
    for i, inst in enumerate(series):
        path = image_dir / f"img{i:04d}.dcm"
        path.write_bytes(inst.data)
        images.append(path)
    image_study = series[0].study
    image_mb = sum(p.stat().st_size for p in images) / 1e6
    studies = tiny_studies(work / "studies", args.studies)
    print(f"data: {len(cines)} cines ({megabytes:,.0f} MB), {len(images)} images "
          f"({image_mb:,.1f} MB), {len(studies)} one-image studies", flush=True)
    t_load = ingest_files(work / "sonobridge", studies)
    print(f"SonoBridge: {args.studies} studies ingested in {t_load:.0f}s", flush=True)

    scp_port = free_port()
    sono, sono_dicom, sono_mllp = sonobridge(work, "sonobridge", {
        "SONOBRIDGE_DICOM_PEERS": f"STORESCP@127.0.0.1:{scp_port},BENCH@127.0.0.1:1"})
    orthanc = start_orthanc(work, {
        "DicomModalities": {"storescp": ["STORESCP", "127.0.0.1", scp_port],
                            "bench": ["BENCH", "127.0.0.1", 1]},
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True})
    try:
        # loading, not measured (in four associations: Orthanc takes 40 ms per object)
        t0 = time.perf_counter()
        loaders = [subprocess.Popen(
            ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port),
             *map(str, studies[k::4])], env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k in range(4)]
        if any(loader.wait() != 0 for loader in loaders):
            raise SystemExit("loading the studies into Orthanc failed")
        t = time.perf_counter() - t0
        print(f"Orthanc: {args.studies} studies stored in {t:.0f}s", flush=True)
        store = {name: (storescu(aet, port, cines), storescu(aet, port, images))
                 for name, aet, port in (("SonoBridge", "SONOBRIDGE", sono_dicom),
                                         (orthanc.name, "ORTHANC", orthanc.dicom_port))}
        move = {}
        for name, aet, port in (("SonoBridge", "SONOBRIDGE", sono_dicom),
                                (orthanc.name, "ORTHANC", orthanc.dicom_port)):
            received = work / f"moved-{aet.lower()}"
            receiver = storescp(received, scp_port)
            try:
                move[name] = movescu(aet, port, image_study, "STORESCP")
            finally:
                receiver.terminate()
                receiver.wait()
            got = len(list(received.iterdir()))
            if got != len(images):
                raise SystemExit(f"C-MOVE from {name}: {got} of {len(images)} arrived")
        finds = {}
        for name, aet, port in (("SonoBridge", "SONOBRIDGE", sono_dicom),
                                (orthanc.name, "ORTHANC", orthanc.dicom_port)):
            finds[name] = (find_pynetdicom(aet, port, args.find_requests),
                           find_findscu(aet, port, max(args.find_requests // 4, 20)))
        stop(orthanc.proc)  # no HL7 there: nothing else of the run shares the two cores now
        t_orders, order_latencies = orders(sono_mllp, args.orders)
        memory = peak_rss_mb(sono.pid)
    finally:
        stop(sono)
        stop(orthanc.proc)
    audited, _, audited_mllp = sonobridge(work, "sonobridge-audit", {"SONOBRIDGE_AUDIT": "on"})
    try:
        t_audited, audited_latencies = orders(audited_mllp, args.orders)
    finally:
        stop(audited)

    print(f"\n| C-STORE by storescu, one association | {len(cines)} cines ({megabytes:,.0f} MB)"
          f" s | MB/s | {len(images)} images ({image_mb:,.1f} MB) s | images/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (t_cines, t_images) in store.items():
        print(f"| {name} | {t_cines:.2f} | {megabytes / t_cines:,.0f} | {t_images:.2f} | "
              f"{len(images) / t_images:,.0f} |")
    (sono_cines, sono_images), (orth_cines, orth_images) = store.values()
    print(f"\ncines: {orth_cines / sono_cines:.2f}x Orthanc's MB/s; "
          f"images: {orth_images / sono_images:.2f}x Orthanc's images/s")
    print(f"\n| C-MOVE of {len(images)} images to storescp | seconds | images/s |")
    print("| --- | ---: | ---: |")
    for name, seconds in move.items():
        print(f"| {name} | {seconds:.2f} | {len(images) / seconds:,.0f} |")
    print(f"\nC-FIND STUDY level over {args.studies:,} studies; findscu process start alone: "
          f"{process_start_ms():.1f} ms")
    print("\n| query | server | pynetdicom, one association: p50 ms | p95 ms | findscu per "
          "query: p50 ms | p95 ms | matches |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for kind in QUERIES:
        for name, (assoc, per_query) in finds.items():
            a, f = assoc[kind], per_query[kind]
            print(f"| {kind} | {name} | {a[0]:.1f} | {a[1]:.1f} | {f[0]:.1f} | {f[1]:.1f} | "
                  f"{a[2]}{'' if a[2] == f[2] else f' / {f[2]}'} |")
    for label, seconds, latencies in (("audit trail off", t_orders, order_latencies),
                                      ("audit trail on", t_audited, audited_latencies)):
        latencies.sort()
        print(f"\nHL7 ({label}): {args.orders} ORM^O01 over one MLLP connection in "
              f"{seconds:.1f}s = {args.orders / seconds:,.0f} messages/s applied with ACK (p50 "
              f"{statistics.median(latencies) * 1000:.2f} ms, p95 "
              f"{latencies[int(len(latencies) * 0.95)] * 1000:.2f} ms)")
    print(f"\nSonoBridge peak memory (VmHWM): {memory:.0f} MB")
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
