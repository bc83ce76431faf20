"""multipart/related for DICOMweb: a streaming writer for responses and a streaming reader for
STOW-RS request bodies (python-multipart does the byte-level parsing)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from sonobridge.dicomweb.errors import DicomwebError

CHUNK = 4 * 1024 * 1024


def new_boundary() -> str:
    return f"sonobridge-{secrets.token_hex(12)}"


@dataclass
class Part:
    content_type: str
    chunks: Iterable[bytes]
    location: str | None = None


def write_parts(boundary: str, parts: Iterable[Part]) -> Iterator[bytes]:
    """The bytes of a multipart/related body, produced part by part (bounded memory)."""
    dash = f"--{boundary}".encode()
    for part in parts:
        head = [dash, b"\r\nContent-Type: ", part.content_type.encode()]
        if part.location:
            head += [b"\r\nContent-Location: ", part.location.encode()]
        head.append(b"\r\n\r\n")
        yield b"".join(head)
        yield from part.chunks
        yield b"\r\n"
    yield dash + b"--\r\n"


def file_chunks(open_file: Callable[[], BinaryIO], start: int = 0, length: int | None = None
                ) -> Iterator[bytes]:
    """Read a file (or a range of it) in large chunks."""
    with open_file() as f:
        if start:
            f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk


@dataclass
class IncomingPart:
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None  # what the sink made of the part's bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/dicom")


class PartSink:
    """Receives the parts of a STOW body: ``begin`` returns a writer for the part's bytes."""

    def begin(self, part: IncomingPart) -> Callable[[bytes], None]:
        raise NotImplementedError

    def end(self, part: IncomingPart) -> None:
        raise NotImplementedError


@dataclass
class _Reading:
    """Where ``read_parts`` is in a body: the part being read, the header field and value
    being read, where the part's bytes go, and whether the closing boundary was seen."""

    part: IncomingPart | None = None
    field: bytes = b""
    value: bytes = b""
    writer: Callable[[bytes], None] | None = None
    ended: bool = False


async def read_parts(stream: AsyncIterator[bytes], boundary: str, sink: PartSink,
                     on_part: Callable[[IncomingPart], object]) -> int:
    """Parse a multipart body from ``stream``; ``on_part`` (called as each part completes) may
    be a coroutine function
    (awaited before reading on). Returns the number of parts; a broken body is a 400."""
    state = _Reading()
    finished: list[IncomingPart] = []

    def on_part_begin() -> None:
        state.part = IncomingPart()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.field = state.field + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.value = state.value + data[start:end]

    def on_header_end() -> None:
        part = state.part
        assert isinstance(part, IncomingPart)
        name = bytes(state.field).decode("latin-1").strip().lower()
        part.headers[name] = bytes(state.value).decode("latin-1").strip()
        state.field, state.value = b"", b""

    def on_headers_finished() -> None:
        part = state.part
        assert isinstance(part, IncomingPart)
        state.writer = sink.begin(part)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        writer = state.writer
        if writer is not None:
            writer(data[start:end])

    def on_part_end() -> None:
        part = state.part
        assert isinstance(part, IncomingPart)
        if state.writer is None:  # a part without headers
            state.writer = sink.begin(part)
        sink.end(part)
        finished.append(part)
        state.writer = None

    def on_end() -> None:
        state.ended = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end})
    count = 0
    try:
        async for chunk in stream:
            parser.write(chunk)
            while finished:
                result = on_part(finished.pop(0))
                if hasattr(result, "__await__"):
                    await result
                count += 1
        parser.finalize()
    except MultipartParseError as exc:
        raise DicomwebError(400, f"broken multipart body: {exc}") from None
    while finished:
        result = on_part(finished.pop(0))
        if hasattr(result, "__await__"):
            await result
        count += 1
    if not state.ended:
        raise DicomwebError(400, "broken multipart body: no closing boundary (--boundary--)")
    return count
