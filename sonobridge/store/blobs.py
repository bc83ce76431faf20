"""Blob storage for large received objects (DICOM files, attachments).

Keys are relative paths such as ``dicom/1.2.3/4.5.6.dcm``. The filesystem store writes each blob
to a temporary file in the target directory, fsyncs it, renames it into place and fsyncs the
directory, so a crash leaves either the old blob or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")
CHUNK = 1024 * 1024


class BlobKeyError(ValueError):
    """The key could escape the store or holds characters a blob key may not hold."""


class BlobStore(Protocol):
    def put(self, key: str, chunks: Iterable[bytes]) -> int: ...
    async def put_async(self, key: str, chunks: AsyncIterable[bytes]) -> int: ...
    def adopt(self, path: Path, key: str) -> None:
        """Move a finished temporary file (on the same filesystem) into place as ``key``."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def ping(self) -> None: ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise BlobKeyError(f"invalid blob key: {key!r}")
    return key


class FileBlobStore:
    """Blobs as files under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _begin(self, key: str) -> tuple[Path, int, str]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
        return target, fd, tmp

    def _commit(self, target: Path, fd: int, tmp: str) -> None:
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _abort(fd: int, tmp: str) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the chunks as the blob ``key`` atomically; returns the size written."""
        target, fd, tmp = self._begin(key)
        size = 0
        try:
            for chunk in chunks:
                os.write(fd, chunk)
                size += len(chunk)
            self._commit(target, fd, tmp)
        except BaseException:
            self._abort(fd, tmp)
            raise
        return size

    async def put_async(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        target, fd, tmp = self._begin(key)
        size = 0
        try:
            async for chunk in chunks:
                os.write(fd, chunk)
                size += len(chunk)
            self._commit(target, fd, tmp)
        except BaseException:
            self._abort(fd, tmp)
            raise
        return size

    def adopt(self, path: Path, key: str) -> None:
        """Move a finished temporary file (on the same filesystem) into place as ``key``."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def ping(self) -> None:
        """Raise ``OSError`` unless the root exists and is writable."""
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise OSError(f"blob store root {self.root} is not a writable directory")


def open_blob_store(url: str) -> FileBlobStore:
    """The blob store for a configured URL: a filesystem path (``file://`` allowed)."""
    if url.startswith("s3://"):
        raise ValueError("s3:// blob stores are not available in this version; use a path")
    if url.startswith("file://"):
        url = url[len("file://"):]
    return FileBlobStore(Path(url))
