"""Run a real `sonobridge serve` process (uvicorn) on a free port for tests that need TCP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")

# The dcmtk tests skip on a machine without dcmtk, with the reason shown; in CI
# (SONOBRIDGE_TEST_REQUIRE_POSTGRES=1, set by .ci/run, which installs dcmtk) they must run, so a
# missing tool fails there instead of skipping quietly.
needs_dcmtk = pytest.mark.skipif(
    any(shutil.which(t) is None for t in DCMTK_TOOLS)
    and os.environ.get("SONOBRIDGE_TEST_REQUIRE_POSTGRES") != "1",
    reason="dcmtk is not installed (Debian package dcmtk; `make peers` installs it as root)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The AE titles the tests' SCUs call with (dcmtk's defaults, pynetdicom's, our own): listed
# as peers with every right, as a site lists its modalities and PACS. A calling AE that is
# not listed may echo and store only (tests/hie/test_dimse_rights.py).
SCU_PEERS = ",".join(f"{aet}@127.0.0.1:1" for aet in (
    "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU", "STORESCU", "PYNETDICOM", "MODALITY",
    "COMMITSCU", "CART1", "CART2"))


def with_scu_peers(peers: str) -> str:
    """``peers`` with the tests' SCUs added (an AE listed already keeps its entry)."""
    listed = {entry.split("@")[0] for entry in peers.split(",") if entry}
    extra = [e for e in SCU_PEERS.split(",") if e.split("@")[0] not in listed]
    return ",".join(p for p in (peers, *extra) if p)


PIDS: dict[str, int] = {}  # base URL -> process id of each server ``serve`` started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (``/proc/PID/stat``): a measure of its work
    that a busy machine does not inflate, as it does wall time."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(db_url: str, work: Path, *args: str, scu_peers: bool = True,
          **env: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = work / "server.log"
    environ = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
               "SONOBRIDGE_DATABASE_URL": db_url, "SONOBRIDGE_AUTH": "disabled",
               "SONOBRIDGE_AUDIT": "off", "SONOBRIDGE_MLLP_PORT": "0",
               "SONOBRIDGE_DICOM_PORT": "0", **env}
    if scu_peers:
        environ["SONOBRIDGE_DICOM_PEERS"] = with_scu_peers(
            environ.get("SONOBRIDGE_DICOM_PEERS", ""))
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sonobridge", "serve", "--port",
                                 str(port), *args], env=environ, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    PIDS[base] = proc.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield base, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
