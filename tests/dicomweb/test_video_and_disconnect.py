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
    leftovers = [p for p in (core.blobs.root / ".incoming").iterdir()]
    assert leftovers == []
    stored = client.get("/dicomweb/instances")
    # the part that arrived whole may be stored; the one cut off is not, and no file is half
    assert stored.status_code in (200, 204)
    count = 0 if stored.status_code == 204 else len(stored.json())
    assert count <= 1
    files = [p for p in (core.blobs.root / "dicom").rglob("*.dcm")] \
        if (core.blobs.root / "dicom").exists() else []
    assert len(files) == count
    assert generate_uid()  # uids still generate: the server is fine
