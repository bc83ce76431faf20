"""One JPEG baseline cine frame decoded in process: what ``Accept: application/octet-stream``
costs on the server before any HTTP (``core/imaging/frames.decode`` and the bytes it gives),
beside the floor (Pillow alone, the libjpeg-turbo decode and its RGB output) and pydicom's
generic path (``Decoder.as_array`` over an encapsulated frame, each plugin).

Used to find and cut the overheads of the decoded-frame path of bench/dicomweb.py
("frame N, decoded"). The frame is the benchmark's synthetic ultrasound frame (YBR_FULL_422,
quality 85).

    .venv/bin/python bench/decode.py                      # 600 x 800, as bench/dicomweb.py
    .venv/bin/python bench/decode.py --rows 720 --cols 1280 --repeat 200

``--http`` measures the same over HTTP as bench/dicomweb.py does ("frame N, decoded": distinct
frames of a 120-frame cine, keep-alive, a browser's headers, default settings with the audit
trail on), without Orthanc and the rest of that benchmark; ``--source DIR`` runs a second
server from another tree (an older commit exported with ``git archive``), requests to the two
interleaved, for a before/after in the same run.

    .venv/bin/python bench/decode.py --http --requests 100
    git archive aab57eb | tar -x -C /tmp/before
    .venv/bin/python bench/decode.py --http --requests 100 --source /tmp/before
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dicom_data import cines, render
from _server import free_port, start, stop

from sonobridge.core.imaging import frames as F

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm: imports, plugin look-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--cols", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--http", action="store_true", help="through a server, over HTTP")
    parser.add_argument("--requests", type=int, default=60, help="with --http")
    parser.add_argument("--source", type=Path, default=None,
                        help="with --http: run the server from this tree")
    args = parser.parse_args()
    if args.http:
        over_http(args)
        return

    _, jpeg = render(args.rows, args.cols, 1)
    frame = jpeg[0]
    metadata = {
        "00280002": {"vr": "US", "Value": [3]},
        "00280004": {"vr": "CS", "Value": ["YBR_FULL_422"]},
        "00280006": {"vr": "US", "Value": [0]},
        "00280010": {"vr": "US", "Value": [args.rows]},
        "00280011": {"vr": "US", "Value": [args.cols]},
        "00280100": {"vr": "US", "Value": [8]},
        "00280101": {"vr": "US", "Value": [8]},
        "00280102": {"vr": "US", "Value": [7]},
        "00280103": {"vr": "US", "Value": [0]},
    }
    ours = F.decoded_bytes(F.decode(JPEG_BASELINE, frame, metadata))
    floor = np.asarray(Image.open(BytesIO(frame)).convert("RGB"))
    # libjpeg-turbo (Pillow) and libjpeg 9 (pylibjpeg) upsample chroma differently
    difference = int(np.abs(np.frombuffer(ours, np.uint8).astype(int) - floor.ravel()).max())

    def pillow() -> bytes:
        with Image.open(BytesIO(frame)) as image:
            return image.tobytes()

    cases: list[tuple[str, Callable[[], object]]] = [
        ("frames.decode + decoded_bytes", lambda: F.decoded_bytes(
            F.decode(JPEG_BASELINE, frame, metadata))),
        ("Pillow decode, bytes (floor)", pillow),
    ]
    decoder = get_decoder(JPEG_BASELINE)
    options = F.pixel_options(metadata, JPEG_BASELINE)
    for plugin in decoder.available_plugins:
        cases.append((f"pydicom as_array, plugin {plugin}", lambda p=plugin: decoder.as_array(
            encapsulate([frame]), index=0, decoding_plugin=p, **options)))

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.rows} x {args.cols} JPEG baseline YBR_FULL_422 frame, {len(frame)} bytes; "
          f"ours vs Pillow max difference {difference}; {args.repeat} runs; load {load}")
    for name, fn in cases:
        p50, p95 = timed(fn, args.repeat)
        print(f"  {name:<40} p50 {p50:6.2f} ms   p95 {p95:6.2f} ms")


def over_http(args: argparse.Namespace) -> None:
    """Decoded frames over HTTP; with ``--source``, from both trees' servers in the same run,
    requests interleaved (the machine's load then weighs on both alike)."""
    import httpx

    _, jpeg = render(args.rows, args.cols, 120)
    [instance] = cines(1, jpeg, args.rows, args.cols)
    boundary = "bench-decode"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + instance.data + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Accept": 'multipart/related; type="application/octet-stream"',
               "Accept-Encoding": "identity",
               "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36",
               "Referer": "https://viewer.example.org/viewer", "Origin":
               "https://viewer.example.org"}
    url = (f"/dicomweb/studies/{instance.study}/series/{instance.series}/instances/"
           f"{instance.sop}/frames/")
    here = Path.cwd()
    trees = [here] + ([args.source] if args.source else [])
    servers: list[tuple[Path, object, httpx.Client]] = []
    with tempfile.TemporaryDirectory() as work:
        try:
            for number, tree in enumerate(trees):
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                os.chdir(tree)  # python -m sonobridge imports from there
                try:
                    proc = start(["-m", "sonobridge", "serve", "--port", str(port),
                                  "--no-sample"],
                                 {"SONOBRIDGE_DATA_DIR": f"{work}/data{number}",
                                  "SONOBRIDGE_AUDIT": "on"},
                                 f"{base}/healthz", Path(work) / f"server{number}.log")
                finally:
                    os.chdir(here)
                http = httpx.Client(base_url=base, timeout=120)
                servers.append((tree, proc, http))
                http.post("/dicomweb/studies", content=body, headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                                    f"boundary={boundary}", "Accept": "application/dicom+json"}
                          ).raise_for_status()
                http.get(url + "120", headers=headers).raise_for_status()  # warm
            numbers = random.Random(1).sample(range(1, 120), min(args.requests, 119))
            times: dict[Path, list[float]] = {tree: [] for tree in trees}
            for n in numbers:  # distinct frames: no server-side cache answers
                for tree, _, http in servers:
                    t0 = time.perf_counter()
                    response = http.get(url + str(n), headers=headers)
                    times[tree].append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                    assert len(response.content) > args.rows * args.cols * 3
        finally:
            for _, proc, http in servers:
                http.close()
                stop(proc)  # type: ignore[arg-type]
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"HTTP, {args.rows} x {args.cols} decoded frames, {len(numbers)} distinct, "
          f"sequential, keep-alive, audit on; load {load}")
    for tree, values in times.items():
        values.sort()
        print(f"  server from {tree}: p50 {statistics.median(values):.2f} ms, "
              f"p95 {values[int(len(values) * 0.95) - 1]:.2f} ms")


if __name__ == "__main__":
    main()
