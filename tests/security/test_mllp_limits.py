"""MLLP that cannot be held open or flooded (security hardening, item 12): connections that
send nothing, or a message that never ends, are closed; one address holds a bounded number of
connections; a field or a message over its limit is refused in milliseconds with ``AR``, kept
in the message log; a birth date at the end of time is no 500."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import PIDS, cpu_seconds, free_port, serve

VT, FS_CR = b"\x0b", b"\x1c\r"
SERVED: dict[int, int] = {}
MSH = "MSH|^~\\&|HIS|HOSP|SONOBRIDGE||20260101000000||ADT^A04|{control}|P|2.5.1\r"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The MLLP port of a served process (its pid in ``SERVED``, by port)."""
    work = tmp_path_factory.mktemp("mllp-limits")
    port = free_port()
    with serve(f"sqlite:///{work / 'm.db'}", work, "--no-sample",
               SONOBRIDGE_MLLP_PORT=str(port), SONOBRIDGE_HL7_IDLE_TIMEOUT="2",
               SONOBRIDGE_HL7_MESSAGE_TIMEOUT="2", SONOBRIDGE_HL7_MAX_CONNECTIONS_PER_PEER="5",
               SONOBRIDGE_HL7_MAX_FIELD_SIZE="1MB") as (base, _):
        SERVED[port] = PIDS[base]
        yield port


def exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while not out.endswith(FS_CR):
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_are_closed(bridge):
    idle = socket.create_connection(("127.0.0.1", bridge))
    half = socket.create_connection(("127.0.0.1", bridge))
    half.sendall(VT + b"MSH|")
    try:
        assert closed_within(idle, 6)
        assert closed_within(half, 6)
    finally:
        idle.close()
        half.close()


def test_one_address_holds_a_bounded_number_of_connections(bridge):
    held = [socket.create_connection(("127.0.0.1", bridge)) for _ in range(5)]
    try:
        for sock in held:
            sock.sendall(VT + b"MSH|")  # each busy, none finished
        extra = socket.create_connection(("127.0.0.1", bridge))
        assert closed_within(extra, 3)  # closed at once, not after a timeout
        extra.close()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    ack = exchange(bridge, VT + (MSH.format(control="after") + "PID|1||A1^^^HOSP^MR||Li^Na\r"
                                 ).encode() + FS_CR)
    assert b"MSA|AA|after" in ack


def test_a_huge_field_is_refused_quickly(bridge):
    message = (MSH.format(control="big") + "PID|1||B1^^^HOSP^MR||Li^Na\r"
               ).encode() + b"NTE|1||" + b"x" * (25 * 1024 * 1024) + b"\r"
    cpu = cpu_seconds(SERVED[bridge])
    ack = exchange(bridge, VT + message + FS_CR, timeout=120)
    assert b"MSA|AR|big" in ack, ack[:300]
    assert b"at most" in ack
    # The server's own CPU time, not the wall clock (a busy machine stretches that): reading
    # 25 MB and refusing it is linear work; the quadratic scan it replaced took 17.7 s.
    spent = cpu_seconds(SERVED[bridge]) - cpu
    assert spent < 2, f"{spent:.2f} s of CPU"


def test_a_birth_date_at_the_end_of_time_is_no_500(bridge):
    message = MSH.format(control="eot") + "PID|1||C1^^^HOSP^MR||Zhang^San||99991231235959|M\r"
    ack = exchange(bridge, VT + message.encode() + FS_CR)
    assert b"MSA|AA|eot" in ack or b"MSA|AE|eot" in ack, ack


def test_the_listener_keeps_serving_after_all_that(bridge):
    ack = exchange(bridge, VT + (MSH.format(control="last") + "PID|1||D1^^^HOSP^MR||Wang^Wei\r"
                                 ).encode() + FS_CR)
    assert b"MSA|AA|last" in ack


def test_limits_are_settings(tmp_path: Path):
    from sonobridge.config import Settings

    settings = Settings.load({"SONOBRIDGE_HL7_MAX_FIELD_SIZE": "2MB",
                              "SONOBRIDGE_HL7_MAX_CONNECTIONS_PER_PEER": "3"})
    assert settings.hl7_max_field_size == 2 * 1024 * 1024
    assert settings.hl7_max_connections_per_peer == 3
