"""The S3 blob store against a real S3 API server (moto): the same contract as the file store,
streamed multipart uploads, ranged reads, and clean failures when the server is away."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from sonobridge.store.blobs import BlobKeyError, open_blob_store
from sonobridge.store.s3 import S3BlobStore, parse_s3_url
from tests.live import free_port
from tests.s3 import moto_server, s3_url  # noqa: F401  (fixtures)


@pytest.fixture
def store(s3_url: str, tmp_path: Path) -> S3BlobStore:  # noqa: F811
    blobs = open_blob_store(s3_url, tmp_path / "scratch")
    assert isinstance(blobs, S3BlobStore)
    return blobs


def test_put_read_ranges_stream_delete(store: S3BlobStore):
    # 13 MiB in 1 MiB chunks: a multipart upload (obstore's part size is 5 MiB+).
    chunk = bytes(range(256)) * 4096
    put = store.put("dicom/1.2/3.dcm", (chunk for _ in range(13)))
    whole = chunk * 13
    assert put.size == len(whole) and put.sha256 == hashlib.sha256(whole).hexdigest()
    assert store.exists("dicom/1.2/3.dcm") and store.size("dicom/1.2/3.dcm") == len(whole)
    assert store.open_range("dicom/1.2/3.dcm", 1_000_000, 10) == whole[1_000_000:1_000_010]
    assert store.read_ranges("dicom/1.2/3.dcm", [(5, 3), (9_000_000, 4)]) == \
        whole[5:8] + whole[9_000_000:9_000_004]
    assert b"".join(store.stream("dicom/1.2/3.dcm", 7, 100_000, chunk=4096)) == \
        whole[7:100_007]
    assert b"".join(store.stream("dicom/1.2/3.dcm", 12_000_000)) == whole[12_000_000:]
    with store.open("dicom/1.2/3.dcm") as f:  # seekable, as pydicom reads
        f.seek(4_000_000)
        assert f.read(6) == whole[4_000_000:4_000_006]
        assert f.tell() == 4_000_006
    with store.local_copy("dicom/1.2/3.dcm") as path:
        assert path.read_bytes() == whole
    assert not path.exists()  # the copy is gone afterwards
    assert store.delete("dicom/1.2/3.dcm") and not store.exists("dicom/1.2/3.dcm")
    assert not store.delete("dicom/1.2/3.dcm")
    store.ping()


def test_put_async_and_put_file(store: S3BlobStore):
    async def chunks():
        for part in (b"x" * 10, b"y" * 5):
            yield part

    assert asyncio.run(store.put_async("k", chunks())).size == 15
    assert store.open_range("k", 0, 15) == b"x" * 10 + b"y" * 5
    received = store.scratch / "incoming.dcm"
    received.write_bytes(b"received")
    store.put_file(received, "dicom/a.dcm")
    assert not received.exists()
    assert store.open_range("dicom/a.dcm", 0, 8) == b"received"


def test_a_failed_upload_leaves_no_object(store: S3BlobStore):
    def broken():
        yield b"a" * (6 * 1024 * 1024)
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("partial", broken())
    assert not store.exists("partial")


def test_bad_keys_and_urls(store: S3BlobStore, tmp_path: Path):
    with pytest.raises(BlobKeyError):
        store.put("../x", [b"x"])
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        parse_s3_url("s3://key:secret@bucket/p")
    with pytest.raises(ValueError, match="unknown S3 blob URL parameter"):
        parse_s3_url("s3://bucket?endpint=http://x")
    with pytest.raises(ValueError):
        open_blob_store("s3://bucket")  # no scratch folder
    assert parse_s3_url("s3://b/p/q?endpoint=https://minio:9000&region=cn-north-1") == {
        "bucket": "b", "prefix": "p/q", "endpoint": "https://minio:9000",
        "region": "cn-north-1"}


def test_server_away_fails_cleanly_and_quickly(tmp_path: Path):
    """Nothing listens: ping and reads raise OSError-family errors, bounded in time."""
    import time

    url = f"s3://bucket?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    store = S3BlobStore(url, tmp_path, timeout="3s")
    started = time.monotonic()
    with pytest.raises(OSError):
        store.ping()
    with pytest.raises(Exception):  # noqa: B017  (obstore's own error type for a refused GET)
        store.open_range("k", 0, 1)
    assert time.monotonic() - started < 60


def test_keys_lists_under_a_prefix(store: S3BlobStore):
    for key in ("dicom/1/a.dcm", "dicom/2/b.dcm", "other/c"):
        store.put(key, [b"x"])
    assert sorted(store.keys("dicom/")) == ["dicom/1/a.dcm", "dicom/2/b.dcm"]
    assert len(list(store.keys())) == 3


def test_read_ahead_serves_the_next_frames_and_forgets_a_replaced_object(store: S3BlobStore):
    data = bytes(range(256)) * 20_000  # 5 MB: crosses the 2 MB read-ahead block
    store.put("cine", [data])
    # In order, as a viewer plays frames; across the block's end; then backwards.
    for start in range(0, len(data), 700_001):
        assert store.open_range("cine", start, 1000) == data[start:start + 1000]
    assert store.open_range("cine", 2 * 1024 * 1024 - 10, 20) == \
        data[2 * 1024 * 1024 - 10:2 * 1024 * 1024 + 10]
    assert store.open_range("cine", 3, 4) == data[3:7]
    store.put("cine", [b"new content"])
    assert store.open_range("cine", 0, 3) == b"new"
    store.delete("cine")
    with pytest.raises(FileNotFoundError):
        store.open_range("cine", 0, 3)
