"""The filesystem blob store writes atomically and refuses keys that could escape it."""

from __future__ import annotations

import asyncio

import pytest

from sonobridge.store.blobs import BlobKeyError, FileBlobStore


def test_put_and_read_back(tmp_path):
    store = FileBlobStore(tmp_path)
    size = store.put("dicom/1.2/3.dcm", [b"abc", b"def"])
    assert size == 6
    with store.open("dicom/1.2/3.dcm") as f:
        assert f.read() == b"abcdef"
    assert store.exists("dicom/1.2/3.dcm") and store.size("dicom/1.2/3.dcm") == 6


def test_failed_write_leaves_old_blob_and_no_temporary(tmp_path):
    store = FileBlobStore(tmp_path)
    store.put("a/b", [b"old"])

    def broken():
        yield b"new-partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("a/b", broken())
    assert store.open("a/b").read() == b"old"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]


def test_async_put(tmp_path):
    store = FileBlobStore(tmp_path)

    async def chunks():
        for part in (b"x" * 10, b"y" * 5):
            yield part

    assert asyncio.run(store.put_async("k", chunks())) == 15
    assert store.open("k").read() == b"x" * 10 + b"y" * 5


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a//b", "", "a/./b",
                                 "sp ace"])
def test_keys_that_could_escape_are_refused(tmp_path, key):
    with pytest.raises(BlobKeyError):
        FileBlobStore(tmp_path).put(key, [b"x"])


def test_delete(tmp_path):
    store = FileBlobStore(tmp_path)
    store.put("k", [b"x"])
    assert store.delete("k") and not store.exists("k") and not store.delete("k")
