"""The filesystem blob store writes atomically and refuses keys that could escape it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sonobridge.store.blobs import BlobKeyError, FileBlobStore


def test_put_and_read_back(tmp_path):
    store = FileBlobStore(tmp_path)
    put = store.put("dicom/1.2/3.dcm", [b"abc", b"def"])
    assert put.size == 6
    assert put.sha256 == "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"
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

    assert asyncio.run(store.put_async("k", chunks())).size == 15
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


def test_ranges_and_streams(tmp_path):
    store = FileBlobStore(tmp_path)
    store.put("k", [bytes(range(256))])
    assert store.open_range("k", 10, 5) == bytes(range(10, 15))
    assert b"".join(store.stream("k", 250)) == bytes(range(250, 256))
    assert list(store.stream("k", 0, 10, chunk=4)) == [bytes(range(0, 4)), bytes(range(4, 8)),
                                                       bytes(range(8, 10))]


def test_stream_opens_nothing_until_read(tmp_path, monkeypatch):
    store = FileBlobStore(tmp_path)
    # A missing blob is said at once (while the response can still be a 404)…
    with pytest.raises(FileNotFoundError):
        store.stream("missing")
    store.put("k", [b"abc"])
    opened = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or
                        real_open(self, *a, **k))
    chunks = store.stream("k")  # …but a response never sent opens nothing
    assert opened == []
    assert b"".join(chunks) == b"abc" and len(opened) == 1


def test_put_file_takes_a_scratch_file_in(tmp_path):
    store = FileBlobStore(tmp_path)
    part = store.scratch / "recv.part"
    part.write_bytes(b"dicom")
    store.put_file(part, "dicom/x.dcm")
    assert not part.exists() and store.open("dicom/x.dcm").read() == b"dicom"
    with store.local_copy("dicom/x.dcm") as path:
        assert path.read_bytes() == b"dicom"


def test_keys_skip_what_is_being_received(tmp_path):
    store = FileBlobStore(tmp_path)
    store.put("dicom/1/a.dcm", [b"x"])
    store.put("other/c", [b"x"])
    (store.scratch / "part").write_bytes(b"half")
    assert list(store.keys("dicom/")) == ["dicom/1/a.dcm"]
    assert list(store.keys()) == ["dicom/1/a.dcm", "other/c"]
