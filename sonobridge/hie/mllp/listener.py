"""The MLLP listener: ``<VT> message <FS><CR>`` blocks over TCP, one ACK per message.

asyncio streams, with the framing read by hand rather than through ``hl7.mllp``'s readers:
those decode text with one fixed encoding, while the character set of each message is only
known from its own MSH-18, and an oversized block must be drained (not the connection closed)
so the sender gets an AR and the next message still arrives.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import anyio.to_thread
from prometheus_client import Counter

from sonobridge.core.services import Core
from sonobridge.hie.mllp.inbound import Inbound
from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error

log = logging.getLogger("sonobridge.mllp")
CLOSED = Counter("sonobridge_mllp_connections_closed_total",
                 "MLLP connections closed by the listener, by reason", ["reason"])

START, END = b"\x0b", b"\x1c\x0d"
_READ = 64 * 1024


class MllpListener:
    """Bounded per connection: a connection idle longer than ``hl7_idle_timeout`` between
    messages, or slower than ``hl7_message_timeout`` from a message's ``<VT>`` to its end, is
    closed; one address may hold ``hl7_max_connections_per_peer`` connections (more are
    closed at once, and logged)."""

    def __init__(self, core: Core, host: str, port: int, max_size: int,
                 tls: ssl.SSLContext | None = None) -> None:
        settings = core.settings
        self.tls = tls
        self.inbound = Inbound(core)
        self.host = host
        self.port = port
        self.max_size = max_size
        self.idle_timeout = float(settings.hl7_idle_timeout)
        self.message_timeout = float(settings.hl7_message_timeout)
        self.per_peer = settings.hl7_max_connections_per_peer
        self.server: asyncio.Server | None = None
        self._limiter = anyio.CapacityLimiter(4)
        self._open: dict[str, int] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._client, self.host, self.port, ssl=self.tls,
            ssl_handshake_timeout=self.message_timeout if self.tls else None)
        sock = self.server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("MLLP%s listener on %s:%d", " over TLS" if self.tls else "", sock[0], sock[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else ""
        address = str(peer_info[0]) if peer_info else ""
        if self._open.get(address, 0) >= self.per_peer:
            log.warning("MLLP from %s refused: %d connections from that address already",
                        peer, self._open[address])
            CLOSED.labels("too-many").inc()
            writer.close()
            return
        self._open[address] = self._open.get(address, 0) + 1
        buffer = bytearray()
        try:
            while True:
                block, too_large = await self._block(reader, buffer)
                if block is None:
                    return  # closed: a message without its end is not acknowledged
                if too_large:
                    error = HL7Error(f"the message is larger than {self.max_size} bytes", "207",
                                     reject=True)
                    ack = _reject(block, error)
                elif START not in block:
                    ack = _reject(block.lstrip(b"\r\n\x00 "), HL7Error(
                        "the block does not start with <VT> (MLLP framing)", "100",
                        reject=True))
                else:
                    start = block.rfind(START)
                    if block[:start].strip(b"\r\n\x00 "):
                        # A new <VT> before the last block ended: the sender gave up on it
                        # and will resend it (it got no ACK). Kept, not answered: the sender
                        # waits for one ACK, the one for the block that did end.
                        await anyio.to_thread.run_sync(
                            self.inbound.unterminated, block[:start].lstrip(START), peer,
                            limiter=self._limiter)
                    ack = await anyio.to_thread.run_sync(self.inbound.handle,
                                                         block[start + 1:], peer,
                                                         limiter=self._limiter)
                writer.write(START + ack + END)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except TimeoutError:
            log.info("MLLP from %s closed: %s", peer, "idle" if not buffer else
                     "a message took too long to arrive")
            CLOSED.labels("idle" if not buffer else "slow").inc()
            return
        finally:
            self._open[address] -= 1
            if not self._open[address]:
                del self._open[address]
            writer.close()

    async def _block(self, reader: asyncio.StreamReader, buffer: bytearray
                     ) -> tuple[bytes | None, bool]:
        """The next block up to ``<FS><CR>`` (without it), and whether it was too large. A
        block over the size limit is read through to its end, keeping only its first 64 KB
        (enough for the MSH the AR needs) so memory stays bounded."""
        oversized = False
        head = b""
        searched = 0  # where the search for <FS><CR> resumes: each byte looked at once
        while True:
            end = buffer.find(END, max(searched - 1, 0))
            if end >= 0:
                block = bytes(buffer[:end])
                del buffer[:end + len(END)]
                return (head, True) if oversized else (block, False)
            searched = len(buffer)
            if oversized or len(buffer) > self.max_size:
                if not oversized:
                    head, oversized = bytes(buffer[:_READ]), True
                last = bytes(buffer[-1:])  # <FS> may end this chunk and <CR> start the next
                buffer.clear()
                buffer.extend(last)
                searched = 1
            # A message is under way once anything but line ends and padding arrived: only a
            # short buffer is looked at (stripping a 25 MB buffer per chunk was quadratic).
            busy = len(buffer) > 64 or bool(buffer.strip(b"\r\n\x00 "))
            timeout = self.message_timeout if busy else self.idle_timeout
            chunk = await asyncio.wait_for(reader.read(_READ), timeout)
            if not chunk:
                return None, False
            buffer.extend(chunk)


def _reject(block: bytes, error: HL7Error) -> bytes:
    import time
    import uuid

    try:
        header = hl7v2.header_fields(block.lstrip(START))
    except HL7Error:
        header = [b"MSH", b"|", b"^~\\&"]
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return hl7v2.ack(header, "AR", str(error), error, uuid.uuid4().hex[:20], stamp).encode()
