"""docs/consultation.md works as written: its shell blocks (curl, bash) run in order against a
real ``sonobridge serve`` with the sample on a fresh database, and every HTTP status they print
is the one the page announces in its ``# → NNN`` comments."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import serve

DOC = Path(__file__).parents[2] / "docs" / "consultation.md"


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text("utf-8"), re.S)


def test_the_page_starts_the_server_it_walks_against():
    first = blocks()[0]
    assert "SONOBRIDGE_AUTH=disabled sonobridge serve" in first and "--port 8080" in first
    assert 'FHIR=http://127.0.0.1:8080/fhir' in blocks()[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_walk_answers_as_the_page_says(tmp_path):
    script = "\n".join(blocks()[1:])
    expected = re.findall(r"# → (\d{3})", script)
    assert len(expected) >= 25
    with serve(f"sqlite:///{tmp_path / 'walk.db'}", tmp_path) as (base, _log):
        run = subprocess.run(["bash", "-c", script.replace("http://127.0.0.1:8080", base)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stdout.splitlines() if re.fullmatch(r"\d{3}", line)]
    assert printed == expected, run.stdout[-3000:]
    # what the page says the reader will see
    assert "待受理 (received/pending-acceptance), requested 已完成" in run.stdout
    assert "Slot/sample-slot-2 is busy" in run.stdout
    assert '"status":"busy"' in run.stdout and '"status":"free"' in run.stdout


def test_the_who_may_table_and_the_diagram_are_the_transition_table():
    from sonobridge.core.consultation import STATES, TRANSITIONS

    text = DOC.read_text("utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "` |" in line
            and line.count("|") == 6 and "`" in line.split("|")[2]]
    documented = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        source = re.findall(r"`([a-z-]+)`", cells[0])
        target = re.findall(r"`([a-z-]+)`", cells[1])[0]
        roles = frozenset(re.findall(r"`([a-z-]+)`", cells[3]))
        assert cells[2] == f"`{STATES[target][0]}`"
        documented.add((source[0] if source else "", target, roles))
    assert documented == {(t.source, t.target, t.roles) for t in TRANSITIONS}
    arrows = set(re.findall(r"^    (\S+) --> (\S+):", text, re.M))
    assert arrows == {(t.source.replace("-", "_") or "[*]", t.target.replace("-", "_"))
                      for t in TRANSITIONS}
