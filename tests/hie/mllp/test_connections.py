"""The results sender keeps one MLLP connection per destination and reconnects when the
receiver closed it, also when the close crosses the next message."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from sonobridge.hie.mllp.outbound import Connections

MESSAGE = b"MSH|^~\\&|SONO|SONO|HIS|HOSP|20261203||ORU^R01|C1|P|2.5\r"
ACK = b"\x0bMSH|^~\\&|HIS|HOSP|SONO|SONO|20261203||ACK|A1|P|2.5\rMSA|AA|C1\r\x1c\r"


class Receiver(socketserver.ThreadingTCPServer):
    """Counts connections and messages; closes a connection after ``per_connection``
    messages (0: never), as some interface engines do."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, per_connection: int = 0, drop_before_ack: bool = False) -> None:
        self.connections = 0
        self.messages = 0
        self.per_connection = per_connection
        self.drop_before_ack = drop_before_ack
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(socketserver.BaseRequestHandler):
    server: Receiver

    def handle(self) -> None:
        self.server.connections += 1
        buffer, count = b"", 0
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\x1c\r" in buffer:
                _, buffer = buffer.split(b"\x1c\r", 1)
                self.server.messages += 1
                if self.server.drop_before_ack:
                    return
                self.request.sendall(ACK)
                count += 1
                if self.server.per_connection and count >= self.server.per_connection:
                    self.request.shutdown(socket.SHUT_RDWR)
                    return


@pytest.fixture
def receiver(request):
    server = Receiver(*getattr(request, "param", ()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_connection_for_many_messages(receiver):
    connections = Connections(timeout=5)
    host, port = receiver.server_address
    for _ in range(20):
        assert b"MSA|AA|C1" in connections.exchange(host, port, MESSAGE)
    assert receiver.messages == 20 and receiver.connections == 1 and connections.opened == 1
    connections.close()


@pytest.mark.parametrize("receiver", [(3,)], indirect=True)
def test_reconnects_when_the_receiver_closed_it(receiver):
    connections = Connections(timeout=5)
    host, port = receiver.server_address
    for _ in range(7):
        assert b"MSA|AA" in connections.exchange(host, port, MESSAGE)
        time.sleep(0.05)  # the receiver's close reaches us between messages
    assert receiver.messages == 7  # none lost, none sent twice
    assert receiver.connections == 3 and connections.opened == 3


def test_idle_connections_are_replaced():
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connections = Connections(timeout=5, idle=0.1)
        host, port = server.server_address
        connections.exchange(host, port, MESSAGE)
        time.sleep(0.2)
        connections.exchange(host, port, MESSAGE)
        assert connections.opened == 2 and server.messages == 2
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("receiver", [(0, True)], indirect=True)
def test_no_ack_on_a_new_connection_is_an_error(receiver):
    connections = Connections(timeout=5)
    host, port = receiver.server_address
    with pytest.raises(ValueError, match="closed before the ACK"):
        connections.exchange(host, port, MESSAGE)
    assert receiver.messages == 1  # a new connection is not retried here: the queue does


@pytest.mark.parametrize("receiver", [(1,)], indirect=True)
def test_a_receiver_taking_one_message_per_connection(receiver):
    """It closes after each ACK; the next message often leaves before the close arrives:
    sent again on a new connection, none lost, none twice."""
    connections = Connections(timeout=5)
    host, port = receiver.server_address
    for _ in range(30):  # no pause: the close and the next message cross
        assert b"MSA|AA" in connections.exchange(host, port, MESSAGE)
    assert receiver.messages == 30


def test_nobody_listening_is_an_oserror():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        Connections(timeout=2).exchange("127.0.0.1", port, MESSAGE)
