"""docs/exchange.md works as written: its shell blocks run in order against two real
``sonobridge serve`` processes — the regional platform and a hospital with the sample data
that sends to it — and every HTTP status they print is the one the page announces in its
``# → NNN`` comments; what the walk says the reader sees (the ITI-41 Task's success, the
platform's copy byte for byte the hospital's CDA, the PDF, ITI-68) is checked too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import serve

DOC = Path(__file__).parents[2] / "docs" / "exchange.md"
PLATFORM = "http://127.0.0.1:8081"
HOSPITAL = "http://127.0.0.1:8080"


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text("utf-8"), re.S)


def _env(block: str) -> dict[str, str]:
    return dict(re.findall(r"(SONOBRIDGE_\w+)=(\S+)", block))


def test_the_page_starts_the_servers_it_walks_against() -> None:
    platform, resident, hospital = blocks()[:3]
    assert "sonobridge serve --data-dir /tmp/sono-platform --port 8081 --no-sample" in platform
    assert _env(platform) == {"SONOBRIDGE_AUTH": "disabled",
                              "SONOBRIDGE_XDS_REPOSITORY_UNIQUE_ID": "2.25.314159265358979323846"}
    assert "P=http://127.0.0.1:8081/fhir" in resident
    assert "sonobridge serve --data-dir /tmp/sono-hospital --port 8080" in hospital
    assert _env(hospital) == {"SONOBRIDGE_AUTH": "disabled",
                              "SONOBRIDGE_XDS_REPOSITORY_URL": f"{PLATFORM}/xds/repository"}


def _bash(script: str, cwd: Path, platform: str, hospital: str, work: Path
          ) -> subprocess.CompletedProcess[str]:
    script = (script.replace(PLATFORM, platform).replace(HOSPITAL, hospital)
              .replace("/tmp/sono-hospital", str(work / "hospital" / "data"))
              .replace("/tmp/sono-consumer", str(work / "consumer")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOBRIDGE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def _statuses(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.fullmatch(r"\d{3}", line)]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_walk_answers_as_the_page_says(tmp_path: Path) -> None:
    platform_cmd, resident, hospital_cmd, *walk = blocks()
    script = "\n".join(walk)
    expected = re.findall(r"# → (\d{3})", script)
    assert len(expected) >= 14
    for name in ("platform", "hospital", "consumer", "shell"):
        (tmp_path / name).mkdir()
    shell = tmp_path / "shell"
    with serve(f"sqlite:///{tmp_path}/platform.db", tmp_path / "platform", "--no-sample",
               **_env(platform_cmd)) as (platform, platform_log):
        run = _bash(resident, shell, platform, "", tmp_path)
        assert run.returncode == 0, run.stderr
        assert _statuses(run.stdout) == re.findall(r"# → (\d{3})", resident) == ["201"]
        env = {k: v.replace(PLATFORM, platform) for k, v in _env(hospital_cmd).items()}
        database = f"sqlite:///{tmp_path / 'hospital' / 'data' / 'sonobridge.db'}"
        with serve(database, tmp_path / "hospital", **env) as (hospital, hospital_log):
            run = _bash(script, shell, platform, hospital, tmp_path)
            logs = hospital_log.read_text()[-2000:] + platform_log.read_text()[-2000:]
            assert run.returncode == 0, (run.stderr, run.stdout[-3000:], logs)
    out = run.stdout
    (tmp_path / "walk.out").write_text(out, "utf-8")  # to read when it fails
    assert _statuses(out) == expected, (_statuses(out), out[:4000])
    # what the page says the reader will see
    assert "<ClinicalDocument" in out
    assert re.search(r'"businessStatus":\{"text":"Success: uniqueId (2\.25\.\d+), \1\.1"\}', out)
    unique_id = re.search(r"^(2\.25\.\d+)$", out, re.M)
    assert unique_id, out
    assert "completed 1" in out
    assert "超声检查报告 (MHD walk)" in out
    assert '"score":' in out
    assert ":ResponseStatusType:Success" in out
    assert f'value="{unique_id[1]}"' in out and f'value="{unique_id[1]}.1"' in out
    assert "multipart/related" in out.lower()
    assert "the platform's CDA is the hospital's" in out
    assert "%PDF-" in out
    assert "ITI-68 gives the same document" in out
    got = (shell / "got" / f"{unique_id[1]}.xml").read_bytes()
    assert got == (shell / "report.xml").read_bytes() == (shell / "iti68.xml").read_bytes()
