"""The audit writer process (``core/audit_writer.py``): the reads' AuditEvents are written by a
process of its own, with the chain intact, nothing lost on a clean shutdown, everything sent
kept when the server's process is killed, and the server's process writing again when the
writer dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sonobridge.core.audit import Record, count, verify
from sonobridge.core.services import open_core


def reads(n: int, start: int = 0) -> list[Record]:
    return [Record("rest", "R", "read", who="viewer", client_id="viewer", ip="10.1.2.3",
                   resource=f"Observation/o{i}", patient="Patient/p1")
            for i in range(start, start + n)]


def started(core):
    """The core, once its writer process (started in the background) is up."""
    deadline = time.monotonic() + 60
    while core.audit._process is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert core.audit._process is not None, "the writer process did not start"
    return core


@pytest.fixture
def process_core(settings):
    core = open_core(dataclasses.replace(settings, audit=True, audit_writer="process"),
                     run_migrations=False)
    yield started(core)
    core.close()


def test_reads_are_written_by_the_writer_process_and_the_chain_holds(process_core):
    trail = process_core.audit
    assert trail._process is not None and trail._process.alive
    writer_pid = trail._process.process.pid
    assert writer_pid != os.getpid()
    for record in reads(700):
        trail.later(record)
    trail.flush()
    assert count(process_core.store) == 700
    # a change audited in its own transaction, here, between batches of the writer's
    process_core.resources.create(process_core.server, "Patient", {"resourceType": "Patient"})
    for record in reads(300, 700):
        trail.later(record)
    trail.flush()
    assert count(process_core.store) == 1001
    result = verify(process_core.store)
    assert result.events == 1001 and result.problems == []


def test_when_the_writer_dies_the_server_process_writes_again(process_core):
    trail = process_core.audit
    for record in reads(50):
        trail.later(record)
    trail.flush()
    trail._process.process.kill()
    trail._process.process.join(10)
    for record in reads(80, 50):
        trail.later(record)
    trail.flush()
    assert trail._process is None  # noticed on the first batch after its death
    assert count(process_core.store) == 130
    assert verify(process_core.store).problems == []


def test_what_was_sent_is_written_when_the_server_process_is_killed(settings, tmp_path):
    script = textwrap.dedent(f"""
        import dataclasses, os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from sonobridge.config import Settings
        from sonobridge.core.services import open_core
        from tests.core.test_audit_writer import reads, started
        if __name__ == "__main__":
            settings = Settings(data_dir=Path({str(tmp_path)!r}),
                                database_url={settings.database_url!r}, auth="disabled",
                                audit=True, audit_writer="process")
            core = started(open_core(settings, run_migrations=False))
            trail = core.audit
            for record in reads(400):
                trail.later(record)
            trail._queue.put(None)  # the batching thread hands everything to the pipe
            trail._thread.join()
            os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    core = open_core(settings, run_migrations=False)
    try:
        deadline = time.monotonic() + 30
        while count(core.store) < 400 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(core.store) == 400
        assert verify(core.store).problems == []
    finally:
        core.close()


def test_a_bad_writer_setting_is_refused(settings):
    from sonobridge.config import ConfigError

    with pytest.raises(ConfigError, match="SONOBRIDGE_AUDIT_WRITER"):
        dataclasses.replace(settings, audit_writer="auto")


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def test_serve_with_a_writer_process_loses_no_read_at_shutdown(db_url, tmp_path):
    import httpx

    from sonobridge.config import Settings
    from tests.live import PIDS, serve

    with serve(db_url, tmp_path, SONOBRIDGE_AUDIT="on", SONOBRIDGE_AUDIT_WRITER="process"
               ) as (base, log):
        pid = PIDS[base]
        deadline = time.monotonic() + 30
        writers: list[int] = []
        while not writers and time.monotonic() < deadline:
            writers = [c for c in _children(pid)
                       if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()]
            time.sleep(0.2)
        assert writers, log.read_text()
        with httpx.Client(base_url=base) as http:
            made = http.post("/fhir/Patient", json={"resourceType": "Patient"})
            assert made.status_code == 201
            for _ in range(120):
                assert http.get(made.headers["location"].split("/_history")[0]).status_code \
                    == 200
    # SIGINT: a clean shutdown; every read's event was written before the process ended
    core = open_core(Settings(data_dir=tmp_path / "data", database_url=db_url, auth="disabled",
                              audit=False), run_migrations=False)
    try:
        with core.store.reader.connect() as conn:
            from sqlalchemy import func, select

            from sonobridge.store.tables import resources as R

            events = conn.execute(select(func.count()).where(
                R.c.res_type == "AuditEvent")).scalar_one()
        assert events >= 121  # the create, 120 reads (and the server's own startup events)
        assert verify(core.store).problems == []
    finally:
        core.close()
