"""Exactly one process holds the listeners' lock; when it dies the lock is free at once (the
database or the kernel releases it), so another process takes over within a poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sonobridge.app.leader import Leadership
from sonobridge.store.db import make_engine

HOLDER = """
import sys, time
from pathlib import Path
from sonobridge.app.leader import Leadership
from sonobridge.store.db import make_engine
leader = Leadership(make_engine(sys.argv[1]), Path(sys.argv[2]))
assert leader.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_one_leader_and_takeover_after_a_kill(db_url, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, db_url, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    engine = make_engine(db_url)
    second = Leadership(engine, tmp_path)
    third = Leadership(engine, tmp_path)
    try:
        assert not second.try_acquire() and not second.held
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup: the lock must go with the process
        proc.wait()
        deadline = time.monotonic() + 10
        while not second.try_acquire():
            assert time.monotonic() < deadline, "the lock was not released by the kill"
            time.sleep(0.2)
        assert second.held and second.still_held()
        assert not third.try_acquire()  # still exactly one
        second.release()
        assert third.try_acquire()
        third.release()
    finally:
        second.release()
        third.release()
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
