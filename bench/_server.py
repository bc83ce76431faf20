"""Helpers for benchmarks: start a server process on a free port, read its peak memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], health_url: str, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        # Benchmarks measure the APIs without authorization and audit trail unless they set
        # SONOBRIDGE_AUTH / SONOBRIDGE_AUDIT (bench/auth.py measures both).
        environ = {**os.environ, "SONOBRIDGE_AUTH": "disabled", "SONOBRIDGE_AUDIT": "off",
                   "SONOBRIDGE_MLLP_PORT": "0", "SONOBRIDGE_DICOM_PORT": "0", **env}
        proc = subprocess.Popen([sys.executable, *args], env=environ,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start, see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def fresh_postgres_url(url: str) -> tuple[str, Callable[[], None]]:
    """A new empty schema in the given PostgreSQL database; returns its URL and a cleanup."""
    import uuid

    from sqlalchemy import text

    from sonobridge.store.db import make_engine, normalise_url

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base = normalise_url(url)
    scoped = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"

    def cleanup() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return scoped, cleanup
