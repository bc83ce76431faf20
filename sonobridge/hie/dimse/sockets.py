"""TCP settings for DIMSE associations, both as acceptor and as requestor.

A DIMSE message is a command PDV and a data set PDV, which both pynetdicom and most peers
write separately. With Nagle's algorithm on at the sender, the second write waits for the
receiver's delayed ACK (40 ms on Linux) of the first: per message, not per association.
Measured on loopback with dcmtk (whose Debian build leaves Nagle on unless ``TCP_NODELAY=1``
is set in its environment): 100 small images by ``storescu`` 4.9 s instead of 0.5 s; every
``findscu`` query 40 ms longer; a C-MOVE of 100 images to ``storescp`` 8.8 s instead of 0.3 s.

So our own sockets set TCP_NODELAY (our writes never wait), and accepted sockets also
acknowledge each read at once (TCP_QUICKACK), so that a sender with Nagle on does not wait
either. pynetdicom has no socket-option hook: the acceptor's ``get_request`` is wrapped, and
requestor sockets are tuned from the ``EVT_CONN_OPEN`` notification.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


class QuickAckSocket(socket.socket):
    """A socket that sends the ACK of what it has read at once. The kernel drops out of
    quick-ACK mode by itself, so the flag is set again after every read; pynetdicom reads
    through ``recv`` only."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return data


def tune(sock: socket.socket) -> socket.socket:
    """TCP_NODELAY, and quick ACKs where the platform has them: the socket to use instead."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _TCP_QUICKACK and type(sock) is socket.socket:  # not a TLS socket
        timeout = sock.gettimeout()
        sock = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        sock.settimeout(timeout)
    return sock


def tuned_accept(accept: Callable[[], tuple[socket.socket, Any]]
                 ) -> Callable[[], tuple[socket.socket, Any]]:
    """Wrap an association server's ``get_request`` so that accepted sockets are tuned."""

    def get_request() -> tuple[socket.socket, Any]:
        client, address = accept()
        return tune(client), address

    return get_request


def _on_open(event: Event) -> None:
    transport = getattr(event.assoc.dul, "socket", None)
    if transport is not None and transport.socket is not None:
        transport.socket = tune(transport.socket)


# ``evt_handlers`` for ``AE.associate``: the requestor's socket is tuned as soon as it is
# connected, before the association request is written.
REQUESTOR_HANDLERS: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, _on_open)]
