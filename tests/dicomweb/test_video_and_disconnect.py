"""Video objects (H.264 in DICOM) and a STOW client that goes away halfway."""

from __future__ import annotations

import asyncio
import io

import av
import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, instance_url, multipart, stow

H264_HIGH = "1.2.840.10008.1.2.4.102"


def h264_stream(frames: int = 12, width: int = 64, height: int = 48, bframes: int = 0) -> bytes:
    """An H.264 Annex B elementary stream, as DICOM video transfer syntaxes carry it."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"bframes": str(bframes)}
        for i in range(frames):
            image = np.full((height, width, 3), (i * 20) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def video_dataset(bframes: int = 0):
    ds = cine("jpeg", frames=12)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
    ds.file_meta.TransferSyntaxUID = H264_HIGH
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PixelData = encapsulate([h264_stream(bframes=bframes)], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = 12
    return ds


@pytest.mark.parametrize("bframes", [0, 2], ids=["copied", "reordered-re-encoded"])
def test_video_is_served_as_mp4(client, bframes):
    ds = video_dataset(bframes)
    assert stow(client, [ds]).status_code == 200
    metadata = client.get(f"{instance_url(ds)}/metadata").json()[0]
    assert metadata["00083002"]["Value"] == [H264_HIGH]
    r = client.get(f"{instance_url(ds)}/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(r.content)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video)) == 12
    thumb = client.get(f"{instance_url(ds)}/thumbnail", headers={"Accept": "image/jpeg"})
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    # a frame-level thumbnail decodes the video up to that frame
    first, last = (client.get(f"{instance_url(ds)}/frames/{n}/thumbnail",
                              headers={"Accept": "image/png"}) for n in (1, 12))
    assert first.status_code == last.status_code == 200
    assert first.content != last.content
    assert client.get(f"{instance_url(ds)}/frames/13/thumbnail").status_code == 404


def test_client_disconnect_leaves_nothing(client, core):
    app = client.app
    first = to_bytes(cine("jpeg"))
    body = multipart([first, to_bytes(cine("jpeg"))])
    cut = len(body) - 2000  # inside the second part
    sent: list[dict] = []

    async def run() -> None:
        chunks = [body[:cut // 2], body[cut // 2:cut]]

        async def receive() -> dict:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/dicomweb/studies",
                 "raw_path": b"/dicomweb/studies", "query_string": b"", "root_path": "",
                 "scheme": "http", "server": ("sono.test", 80), "client": ("127.0.0.1", 1),
                 "http_version": "1.1", "headers": [
                     (b"host", b"sono.test"),
                     (b"content-type", f'multipart/related; type="application/dicom"; '
                                       f"boundary={BOUNDARY}".encode())]}
        await app(scope, receive, send)

    asyncio.run(run())
    leftovers = list(core.blobs.scratch.iterdir())
    assert leftovers == []
    stored = client.get("/dicomweb/instances")
    # the part that arrived whole may be stored; the one cut off is not, and no file is half
    assert stored.status_code in (200, 204)
    count = 0 if stored.status_code == 204 else len(stored.json())
    assert count <= 1
    files = [k for k in core.blobs.keys("dicom/") if k.endswith(".dcm")]
    assert len(files) == count
    assert generate_uid()  # uids still generate: the server is fine


def test_a_rendered_cine_is_a_file_served_in_ranges(client, core):
    ds = cine("jpeg", frames=6)
    assert stow(client, [ds]).status_code == 200
    url = f"{instance_url(ds)}/rendered"
    whole = client.get(url, headers={"Accept": "video/mp4"})
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    with av.open(io.BytesIO(whole.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    made = core.archive.cache.computed
    part = client.get(url, headers={"Accept": "video/mp4", "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert core.archive.cache.computed == made  # the browser's next pieces: not encoded again


LONG_CINE = """
import resource, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests/fixtures")
from make_us_cine import build_dataset
from pydicom.uid import generate_uid
from sonobridge.config import Settings
from sonobridge.core.services import open_core
from sonobridge.core.policy import Policy
from tests.dicom_data import to_bytes

work, phase = Path(sys.argv[1]), sys.argv[2]
core = open_core(Settings(data_dir=work, database_url=f"sqlite:///{work}/c.db", audit=False))
if phase == "store":  # in a process of its own: holding the cine here must not count below
    frames, rows, cols = 150, 480, 640
    pixels = np.random.default_rng(1).integers(0, 255, (frames, rows, cols, 3), dtype=np.uint8)
    data = to_bytes(build_dataset(rows, cols, frames, raw_rgb=pixels, sop_uid=generate_uid()))
    outcome = core.ingest.ingest(core.ingest.receiver.receive([data]),
                                 core.caller(Policy.system("t", "t")))
    assert outcome.ok, outcome.message
    print(outcome.study_uid, outcome.series_uid, outcome.sop_instance_uid)
else:
    row = core.archive.instance(*sys.argv[3:6])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    path = core.archive.render_video(row, "video/mp4", None, None)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(before, after, path.stat().st_size)
core.close()
"""


def test_a_long_cine_is_encoded_a_frame_at_a_time(tmp_path):
    """150 frames of 640 x 480 RGB are 138 MB decoded; encoded one at a time, the peak
    grows by a small part of that (measured in a process that did nothing else before)."""
    import subprocess
    import sys

    def run(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", LONG_CINE, str(tmp_path), *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-3:]

    uids = run("store")
    before, after, size = map(int, run("render", *uids))
    assert size > 0
    assert after - before < 60, (before, after)
