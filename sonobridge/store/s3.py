"""Blobs in an S3-compatible object store (MinIO, Ceph RGW, AWS S3…), through ``obstore``.

``SONOBRIDGE_BLOB_URL=s3://bucket/prefix?endpoint=https://minio:9000&region=us-east-1``.
Credentials come from the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``) variables, never from the URL, which is printed in logs and banners.

What the interface asks, in object-store terms:

- ``put``/``put_async``: obstore's streaming put (multipart above its part size), hashing the
  chunks as they pass, so a 2 GB cine never sits in memory;
- ``put_file``: received objects land in a local ``scratch`` folder (pydicom and the STOW
  receiver need a file), then are uploaded and the local file removed;
- ``open_range``/``read_ranges``: ranged GETs located by the frame table, with a small
  read-ahead (2 MB from the frame asked for, kept 10 s per object) so that a cine played in
  order costs one GET per few frames, not one per frame;
- ``open``: a seekable reader whose reads are ranged GETs, wrapped in a buffer so that
  pydicom's many small reads do not become many requests;
- ``local_copy``: a download to ``scratch`` for libraries that need a path (pynetdicom's
  C-STORE sender), removed afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.store import S3Store

from sonobridge.store.blobs import CHUNK, Put, check_key

if TYPE_CHECKING:
    from obstore.store import ClientConfig  # in the type stubs only

READ_BUFFER = 256 * 1024  # bytes a buffered reader asks for at once (pydicom reads in bits)
# Frames are read in order (a viewer plays a cine): one ranged GET fetches this much from the
# frame asked for, and the next frames come from memory. Blocks are kept per object for a short
# time only, since another worker may replace an object under the same key.
READ_AHEAD = 2 * 1024 * 1024
READ_AHEAD_OBJECTS = 16
READ_AHEAD_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class _Block:
    start: int
    data: bytes
    fetched: float

    def slice(self, start: int, length: int, now: float) -> bytes | None:
        end = start + length
        if now - self.fetched > READ_AHEAD_SECONDS or start < self.start:
            return None
        if end <= self.start + len(self.data):
            return self.data[start - self.start:end - self.start]
        return None


class _RangedReader(io.RawIOBase):
    """``obstore``'s ReadableFile as a raw binary stream (its reads return ``Bytes``, not
    ``bytes``; ``io.BufferedReader`` needs ``readinto``)."""

    def __init__(self, readable: Any, name: str) -> None:
        self._file = readable
        self.name = name  # pydicom names the file it read from in its datasets

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = memoryview(self._file.read(len(view)))
        view[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._file.seek(offset, whence))

    def tell(self) -> int:
        return int(self._file.tell())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        super().close()


def parse_s3_url(url: str) -> dict[str, Any]:
    """``s3://bucket/prefix?endpoint=…&region=…`` as S3Store arguments."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"an S3 blob URL is s3://bucket[/prefix][?endpoint=…&region=…], "
                         f"not {url!r}")
    if "@" in parts.netloc:
        raise ValueError("put S3 credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                         "not in SONOBRIDGE_BLOB_URL")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ValueError(f"unknown S3 blob URL parameter(s): {', '.join(sorted(unknown))} "
                         "(known: endpoint, region)")
    args: dict[str, Any] = {"bucket": parts.netloc}
    prefix = parts.path.strip("/")
    if prefix:
        args["prefix"] = prefix
    endpoint = query.get("endpoint")
    if endpoint:
        args["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            args["client_options"] = {"allow_http": True}
    if query.get("region"):
        args["region"] = query["region"]
    return args


class S3BlobStore:
    """Blobs as objects under ``prefix`` in one bucket (see the module docstring)."""

    def __init__(self, url: str, scratch: Path, *, timeout: str = "30s") -> None:
        args = parse_s3_url(url)
        client_options: ClientConfig = {"timeout": timeout, "connect_timeout": "5s"}
        if args.pop("client_options", None):
            client_options["allow_http"] = True
        self.url = url
        self._store = S3Store(**args, client_options=client_options)
        self._scratch = scratch
        self._blocks: OrderedDict[str, _Block] = OrderedDict()
        self._lock = threading.Lock()

    def _forget(self, key: str) -> None:
        with self._lock:
            self._blocks.pop(key, None)

    @property
    def scratch(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def put(self, key: str, chunks: Iterable[bytes]) -> Put:
        digest = hashlib.sha256()
        size = 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        self._forget(key)
        obstore.put(self._store, check_key(key), hashed())
        self._forget(key)
        return Put(key, size, digest.hexdigest())

    async def put_async(self, key: str, chunks: AsyncIterable[bytes]) -> Put:
        digest = hashlib.sha256()
        size = 0

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        self._forget(key)
        await obstore.put_async(self._store, check_key(key), hashed())
        self._forget(key)
        return Put(key, size, digest.hexdigest())

    def put_file(self, path: Path, key: str) -> None:
        """Upload a finished scratch file as ``key``, then remove it (only once the object
        store has it: a failed upload leaves the file for the caller to clean up)."""
        obstore.put(self._store, check_key(key), Path(path))
        self._forget(key)
        path.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        reader = obstore.open_reader(self._store, check_key(key), buffer_size=READ_BUFFER)
        return io.BufferedReader(_RangedReader(reader, key), READ_BUFFER)

    def open_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``: from the object's read-ahead block when it holds
        them, else one ranged GET of at least ``READ_AHEAD`` bytes, kept as its block."""
        now = time.monotonic()
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                data = block.slice(start, length, now)
                if data is not None:
                    self._blocks.move_to_end(key)
                    return data
        fetched = bytes(obstore.get_range(self._store, check_key(key), start=start,
                                          length=max(length, READ_AHEAD)))
        with self._lock:
            self._blocks[key] = _Block(start, fetched, now)
            self._blocks.move_to_end(key)
            while len(self._blocks) > READ_AHEAD_OBJECTS:
                self._blocks.popitem(last=False)
        return fetched[:length]

    def read_ranges(self, key: str, ranges: Sequence[Sequence[int]]) -> bytes:
        """A frame's fragments (usually adjacent, so one block serves them all)."""
        return b"".join(self.open_range(key, r[0], r[1]) for r in ranges)

    def stream(self, key: str, start: int = 0, length: int | None = None,
               chunk: int = CHUNK) -> Iterator[bytes]:
        """Chunks of the object. The GET is made now (a missing object raises
        ``FileNotFoundError`` while the response can still be a 404); its body is read as the
        chunks are asked for."""
        options: dict[str, Any] = {}
        if start or length is not None:
            options["range"] = {"offset": start} if length is None else (start, start + length)
        result = obstore.get(self._store, check_key(key), options=options or None)  # type: ignore[arg-type]

        def chunks() -> Iterator[bytes]:
            for piece in result.stream(min_chunk_size=chunk):
                yield bytes(piece)

        return chunks()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        fd, name = tempfile.mkstemp(prefix=".copy-", dir=self.scratch)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                for piece in self.stream(key):
                    f.write(piece)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._store, check_key(key))
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(obstore.head(self._store, check_key(key))["size"])

    def delete(self, key: str) -> bool:
        """Remove the object; ``False`` when it was not there (S3 deletes answer the same
        either way, so one HEAD asks first)."""
        self._forget(key)
        if not self.exists(key):
            return False
        obstore.delete(self._store, key)
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        for batch in obstore.list(self._store, prefix=prefix or None):
            for meta in batch:
                yield str(meta["path"])

    def ping(self) -> None:
        """Raise ``OSError`` unless the bucket answers a listing."""
        try:
            next(iter(obstore.list(self._store, chunk_size=1)), None)
        except Exception as exc:  # obstore raises its own errors for network and auth
            raise OSError(f"object store {self.url} does not answer: {exc}") from exc
