"""TCP tuning of DIMSE sockets: TCP_NODELAY on our writes, quick ACKs of the peer's writes."""

from __future__ import annotations

import socket
import sys

import pytest

from sonobridge.hie.dimse import sockets


@pytest.fixture
def connected() -> tuple[socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = sockets.tuned_accept(server.accept)()
    server.close()
    yield client, accepted
    client.close()
    accepted.close()


def test_accepted_sockets_send_without_delay(connected):
    _, accepted = connected
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux only")
def test_accepted_sockets_acknowledge_each_read_at_once(connected):
    client, accepted = connected
    assert isinstance(accepted, sockets.QuickAckSocket)
    client.sendall(b"P-DATA")
    assert accepted.recv(16) == b"P-DATA"
    # the kernel clears the flag on its own; after a read it is set again
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    accepted.sendall(b"reply")
    assert client.recv(16) == b"reply"


def test_tuning_keeps_the_timeout():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    raw, _ = server.accept()
    raw.settimeout(7.5)
    tuned = sockets.tune(raw)
    assert tuned.gettimeout() == 7.5
    assert raw.fileno() == -1  # the descriptor moved to the tuned socket, not duplicated
    for s in (server, client, tuned):
        s.close()
