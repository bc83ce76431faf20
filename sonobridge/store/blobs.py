"""Blob storage for large received objects (DICOM files, attachments).

Keys are relative names such as ``dicom/1.2.3/4.5.6.dcm``. Everything outside ``store/`` sees
blobs through ``BlobStore`` only: put (streamed, returns size and SHA-256), open (a seekable
read), open_range (one byte range: a frame), stream (chunks, for responses), delete. No file
path leaks, so an object store is another class of this interface, not a change in the edges.

Two operations exist for what libraries that read only local files need: objects are received
into ``scratch`` (a local folder, on the same filesystem as the blobs for the file store) and
then taken in by ``put_file``; ``local_copy`` lends a local file holding a blob (for
pynetdicom's chunked C-STORE sender, which reads a path).

The filesystem store writes each blob to a temporary file in the target directory, fsyncs it,
renames it into place and fsyncs the directory, so a crash leaves either the old blob or the
new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")
CHUNK = 1024 * 1024


class BlobKeyError(ValueError):
    """The key could escape the store or holds characters a blob key may not hold."""


@dataclass(frozen=True, slots=True)
class Put:
    """What a put wrote: its size and SHA-256 (hex), for the index and for ``verify``."""

    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    """What the core and the edges may do with blobs (see the module docstring)."""

    @property
    def scratch(self) -> Path:
        """A local folder for objects being received, before ``put_file``."""
        ...

    def put(self, key: str, chunks: Iterable[bytes]) -> Put: ...

    async def put_async(self, key: str, chunks: AsyncIterable[bytes]) -> Put: ...

    def put_file(self, path: Path, key: str) -> None:
        """Take a finished file from ``scratch`` in as ``key`` (the file is consumed)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A seekable binary reader of the blob."""
        ...

    def open_range(self, key: str, start: int, length: int) -> bytes: ...

    def read_ranges(self, key: str, ranges: Sequence[Sequence[int]]) -> bytes:
        """The bytes of several (offset, length) ranges, joined (a frame's fragments)."""
        ...

    def stream(self, key: str, start: int = 0, length: int | None = None,
               chunk: int = CHUNK) -> Iterator[bytes]: ...

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> bool: ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every blob key under ``prefix`` (for ``verify``, backups and tests)."""
        ...

    def ping(self) -> None: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise BlobKeyError(f"invalid blob key: {key!r}")
    return key


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_chunks(f: BinaryIO, start: int, length: int | None, chunk: int = CHUNK
                ) -> Iterator[bytes]:
    """``length`` bytes (all, when ``None``) from ``start`` of an open file, in chunks."""
    f.seek(start)
    left = length
    while left is None or left > 0:
        data = f.read(chunk if left is None else min(chunk, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data


class FileBlobStore:
    """Blobs as files under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._scratch = self.root / ".incoming"

    @property
    def scratch(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _begin(self, key: str) -> tuple[Path, int, str]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
        return target, fd, tmp

    @staticmethod
    def _commit(target: Path, fd: int, tmp: str) -> None:
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)

    @staticmethod
    def _abort(fd: int, tmp: str) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    def put(self, key: str, chunks: Iterable[bytes]) -> Put:
        """Write the chunks as the blob ``key`` atomically."""
        target, fd, tmp = self._begin(key)
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in chunks:
                os.write(fd, chunk)
                digest.update(chunk)
                size += len(chunk)
            self._commit(target, fd, tmp)
        except BaseException:
            self._abort(fd, tmp)
            raise
        return Put(key, size, digest.hexdigest())

    async def put_async(self, key: str, chunks: AsyncIterable[bytes]) -> Put:
        target, fd, tmp = self._begin(key)
        digest, size = hashlib.sha256(), 0
        try:
            async for chunk in chunks:
                os.write(fd, chunk)
                digest.update(chunk)
                size += len(chunk)
            self._commit(target, fd, tmp)
        except BaseException:
            self._abort(fd, tmp)
            raise
        return Put(key, size, digest.hexdigest())

    def put_file(self, path: Path, key: str) -> None:
        """Move a finished scratch file (same filesystem) into place as ``key``."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path, target)
        _fsync_dir(target.parent)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def open_range(self, key: str, start: int, length: int) -> bytes:
        return self.read_ranges(key, [(start, length)])

    def read_ranges(self, key: str, ranges: Sequence[Sequence[int]]) -> bytes:
        # pread on a raw descriptor: no buffered file object, no seek, for the hot path of
        # frame retrieval
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            return b"".join(os.pread(fd, length, offset) for offset, length in ranges)
        finally:
            os.close(fd)

    def stream(self, key: str, start: int = 0, length: int | None = None,
               chunk: int = CHUNK) -> Iterator[bytes]:
        """Chunks of the blob, the file opened when the first is asked for (a response that
        is never sent opens nothing) and closed when the last is given or the consumer
        stops."""
        path = self._path(key)
        if not path.is_file():  # said now, while the response can still be an error
            raise FileNotFoundError(f"no blob {key}")

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                yield from read_chunks(f, start, length, chunk)

        return chunks()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The blob's own file: nothing to copy on a filesystem."""
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no blob {key}")
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not key.startswith(".incoming") \
                    and not path.name.startswith(".incoming-"):
                yield key

    def ping(self) -> None:
        """Raise ``OSError`` unless the root exists and is writable."""
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise OSError(f"blob store root {self.root} is not a writable directory")


def open_blob_store(url: str, scratch: Path | None = None) -> BlobStore:
    """The blob store for a configured URL: a filesystem path (``file://`` allowed), or
    ``s3://bucket/prefix?endpoint=…&region=…`` (``store/s3.py``; objects are received into
    ``scratch``, a local folder, before they are uploaded)."""
    if url.startswith("s3://"):
        from sonobridge.store.s3 import S3BlobStore

        if scratch is None:
            raise ValueError("an S3 blob store needs a local scratch folder")
        return S3BlobStore(url, scratch)
    if url.startswith("file://"):
        url = url[len("file://"):]
    return FileBlobStore(Path(url))
