"""What one AuditEvent costs the audit writer, in CPU: the writer runs in the server's process,
so every microsecond it spends is taken from the requests (the GIL).

    .venv/bin/python bench/audit_cost.py [--events 5000] [--database-url URL]

Writes batches of 100 read records (as the background writer does) after a warm-up, and
prints the process CPU per event. Profile with ``--profile`` (cProfile, top 25 by cumulative
time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from sonobridge.config import Settings
from sonobridge.core.audit import Record
from sonobridge.core.services import open_core


def records(n: int) -> list[Record]:
    return [Record("rest", "R", "read", who="client-1", client_id="client-1", ip="127.0.0.1",
                   resource=f"Observation/o{i}", patient="Patient/p1") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        url = args.database_url or f"sqlite:///{work}/audit.db"
        core = open_core(Settings(data_dir=Path(work), database_url=url))
        trail = core.audit
        assert trail is not None
        for _ in range(5):  # warm-up: extractors compiled, statements cached
            trail._write(records(100))
        batch = records(args.events)
        profiler = cProfile.Profile() if args.profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        for i in range(0, len(batch), 100):
            trail._write(batch[i:i + 100])
        if profiler:
            profiler.disable()
        spent = time.process_time() - started
        core.close()
    print(f"{args.events} events: {spent / args.events * 1e6:.0f} us CPU per event "
          f"({'profiled' if profiler else 'not profiled'})")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
