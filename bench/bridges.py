"""Bridges benchmark: C-STORE against Orthanc, HL7 orders over MLLP, C-FIND over 10,000 studies.

    .venv/bin/python bench/bridges.py [--cines 50] [--orders 2000] [--studies 10000]

1. C-STORE: dcmtk ``storescu`` sends the same 50 ultrasound cines (600x800x120 JPEG, about
   10 MB each, one association) to SonoBridge and to Debian's Orthanc, in the same run: MB/s.
2. HL7: ``--orders`` ORM^O01 messages over one MLLP connection, each waiting for its ACK
   (every one applied: a Patient and a ServiceRequest written): messages/s.
3. C-FIND at STUDY level over ``--studies`` studies loaded beforehand (tiny single-frame
   objects through the ingest path), with pynetdicom as the SCU: p50/p95 per query kind.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parent))
import _dicom_data as data
from _server import free_port, peak_rss_mb, start, stop
from dicomweb import ensure_orthanc, start_orthanc

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "fixtures" / "storescu-us.cfg"


def storescu(aet: str, port: int, files: list[Path]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(["storescu", "-xf", str(CONFIG), "US", "-aec", aet, "127.0.0.1",
                             str(port), *map(str, files)], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"storescu to {aet} failed: {result.stderr[-1000:]}")
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


def load_studies(data_dir: Path, count: int) -> float:
    """Tiny single-frame US objects, one study each, through the ingest path."""
    from pydicom import dcmwrite
    from pydicom.dataset import FileMetaDataset

    from sonobridge.config import Settings
    from sonobridge.core import open_core
    from sonobridge.store.dicom.ingest import DicomIngest

    core = open_core(Settings(data_dir=data_dir, audit=False, auth="disabled"))
    ingest = DicomIngest(core)
    pixels = np.zeros((16, 16, 3), dtype=np.uint8).tobytes()
    families = ["Zhang", "Wang", "Li", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"]
    t0 = time.perf_counter()
    deferred: set[str] = set()
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientID = f"FIND{i:05d}"
        ds.PatientName = f"{families[i % 10]}^Patient{i}"
        ds.StudyDate = f"2026{1 + i % 12:02d}{1 + i % 28:02d}"
        ds.AccessionNumber = f"FA{i:06d}"
        ds.Modality = "US"
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation, ds.PlanarConfiguration = 0, 0
        ds.PixelData = pixels
        from io import BytesIO

        out = BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        outcome = ingest.ingest(ingest.receiver.receive([out.getvalue()]), source="bench",
                                deferred=deferred)
        if not outcome.ok:
            raise SystemExit(f"loading study {i} failed: {outcome.message}")
        if len(deferred) >= 500:
            ingest.sync_studies(deferred)
    ingest.sync_studies(deferred)
    elapsed = time.perf_counter() - t0
    core.close()
    return elapsed


def c_find(port: int, requests: int) -> dict[str, tuple[float, float, int]]:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(FIND)
    from sonobridge.hie.dimse import sockets

    assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE",
                         evt_handlers=sockets.REQUESTOR_HANDLERS)
    kinds = {
        "PatientID=<exact>": lambda i: {"PatientID": f"FIND{(i * 37) % 10000:05d}"},
        "PatientName=Wang^Patient1* (name prefix)": lambda i: {
            "PatientName": f"Wang^Patient{(i % 9) + 1}1*"},
        "StudyDate=<one day>": lambda i: {"StudyDate": f"2026{1 + i % 12:02d}{1 + i % 28:02d}"},
        "AccessionNumber=<exact>": lambda i: {"AccessionNumber": f"FA{(i * 53) % 10000:06d}"},
    }
    out = {}
    for name, keys in kinds.items():
        times, matches = [], 0
        for i in range(requests):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = ""
            ds.PatientName = ""
            ds.PatientID = ""
            ds.StudyDate = ""
            ds.ModalitiesInStudy = ""
            for key, value in keys(i).items():
                setattr(ds, key, value)
            t0 = time.perf_counter()
            found = sum(1 for status, _ in assoc.send_c_find(ds, FIND)
                        if status and status.Status == 0xFF00)
            times.append(time.perf_counter() - t0)
            matches += found
        times.sort()
        out[name] = (statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000,
                     matches // requests)
    assoc.release()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cines", type=int, default=50)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--find-requests", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sonobridge-bridges-"))
    ensure_orthanc()
    print(f"work directory: {work}", flush=True)

    _, jpeg = data.render(600, 800, 120)
    folder = work / "cines"
    folder.mkdir()
    files = []
    for i, inst in enumerate(data.cines(args.cines, jpeg, 600, 800)):
        path = folder / f"cine{i:03d}.dcm"
        path.write_bytes(inst.data)
        files.append(path)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"data: {len(files)} cines, {megabytes:,.0f} MB", flush=True)

    sono_data = work / "sonobridge"
    t_load = load_studies(sono_data, args.studies)
    print(f"loaded {args.studies} studies for C-FIND in {t_load:.0f}s", flush=True)

    http, dicom, mllp = free_port(), free_port(), free_port()
    env = {"SONOBRIDGE_DATA_DIR": str(sono_data), "SONOBRIDGE_LOG_LEVEL": "warning",
           "SONOBRIDGE_DICOM_PORT": str(dicom), "SONOBRIDGE_MLLP_PORT": str(mllp)}
    sono = start(["-m", "sonobridge", "serve", "--port", str(http), "--no-sample"], env,
                 f"http://127.0.0.1:{http}/healthz", work / "sonobridge.log")
    orthanc = start_orthanc(work)
    try:
        t_sono = storescu("SONOBRIDGE", dicom, files)
        t_orthanc = storescu("ORTHANC", orthanc.dicom_port, files)
        finds = c_find(dicom, args.find_requests)
        t_orders, order_latencies = orders(mllp, args.orders)
        memory = peak_rss_mb(sono.pid)
    finally:
        stop(sono)
        stop(orthanc.proc)
    order_latencies.sort()
    print(f"\n| C-STORE, storescu, {len(files)} cines ({megabytes:,.0f} MB), one association "
          "| seconds | MB/s |")
    print("| --- | ---: | ---: |")
    print(f"| SonoBridge | {t_sono:.2f} | {megabytes / t_sono:,.0f} |")
    print(f"| {orthanc.name} | {t_orthanc:.2f} | {megabytes / t_orthanc:,.0f} |")
    print(f"\nratio: {t_orthanc / t_sono:.2f}x Orthanc's MB/s")
    print(f"\nHL7: {args.orders} ORM^O01 over one MLLP connection in {t_orders:.1f}s = "
          f"{args.orders / t_orders:,.0f} messages/s applied with ACK (p50 "
          f"{statistics.median(order_latencies) * 1000:.2f} ms, p95 "
          f"{order_latencies[int(len(order_latencies) * 0.95)] * 1000:.2f} ms)")
    print(f"\n| C-FIND STUDY level over {args.studies:,} studies ({args.find_requests} each) "
          "| p50 ms | p95 ms | matches |")
    print("| --- | ---: | ---: | ---: |")
    for name, (p50, p95, matches) in finds.items():
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {matches} |")
    print(f"\nSonoBridge peak memory (VmHWM): {memory:.0f} MB")
    if os.environ.get("KEEP") != "1":
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
