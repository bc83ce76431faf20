"""Who may ask what over DIMSE: each listed AE title has rights (``rights=`` in
SONOBRIDGE_DICOM_PEERS, every service by default); an AE title that is not listed may echo
and store only. Refusals answer 0x0124 (Refused: Not Authorized, PS3.7 C) and are audited.
Driven with dcmtk's findscu, movescu and getscu, as an unlisted and as a listed caller."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from tests.dicom_data import cine, to_bytes
from tests.live import free_port, needs_dcmtk, serve

FIXTURES = Path(__file__).parents[2] / "fixtures"
STUDY = "2.25.7301"
pytestmark = needs_dcmtk


@dataclass
class World:
    base: str
    port: int
    work: Path
    dest: Path  # what the storescp called DEST received

    def dcm(self, tool: str, aet: str, *args: str, files: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "-v", "-aet", aet, "-aec", "SONOBRIDGE", *args, "127.0.0.1",
                               str(self.port), *files], capture_output=True, text=True,
                              timeout=120)

    def audit(self, subtype: str) -> list[dict]:
        """Refused (outcome 4) AuditEvents of a DIMSE operation, newest first (they are
        written in batches a moment after the refusal: asked again for up to 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(f"{self.base}/fhir/AuditEvent", params={
                "subtype": subtype, "outcome": "4", "_sort": "-date"}, timeout=30)
            assert r.status_code == 200, r.text
            found = [e["resource"] for e in r.json().get("entry", [])]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("rights")
    port, dest_port = free_port(), free_port()
    dest = work / "dest"
    dest.mkdir()
    source = work / "cine.dcm"
    source.write_bytes(to_bytes(cine(frames=2, study=STUDY, patient_id="PID-RIGHTS")))
    receiver = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(dest), str(dest_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peers = ",".join([f"DEST@127.0.0.1:{dest_port}", "VIEWER@127.0.0.1:1",
                      "FINDONLY@127.0.0.1:1:rights=find+echo"])
    try:
        with serve(f"sqlite:///{work / 'r.db'}", work, "--no-sample", scu_peers=False,
                   SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_DICOM_PEERS=peers,
                   SONOBRIDGE_AUDIT="on") as (base, _log):
            world = World(base, port, work, dest)
            # An unlisted modality may store (Orthanc's defaults too).
            stored = world.dcm("storescu", "CART9", "-xf", str(FIXTURES / "storescu-us.cfg"),
                               "US", files=(str(source),))
            assert stored.returncode == 0, stored.stdout + stored.stderr
            yield world
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).lower()


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    """dcmtk's words for status 0x0124, which its tables do not name: "status: 0x124"."""
    return "status: 0x124" in _output(result)


def test_an_unlisted_ae_may_echo(world):
    assert world.dcm("echoscu", "STRANGER").returncode == 0


def test_an_unlisted_ae_may_not_find(world):
    result = world.dcm("findscu", "STRANGER", "-S", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", "StudyInstanceUID", "-k", "PatientID")
    assert refused(result), _output(result)
    assert "pid-rights" not in _output(result)  # nothing of the study leaked
    events = world.audit("C-FIND")
    assert events and events[0]["agent"][0]["who"]["identifier"]["value"] == "dicom:STRANGER"


def test_an_unlisted_ae_may_not_use_the_worklist(world):
    result = world.dcm("findscu", "STRANGER", "-W", "-k", "PatientID")
    assert refused(result), _output(result)


def test_an_unlisted_ae_may_not_move(world):
    before = set(world.dest.iterdir())
    result = world.dcm("movescu", "STRANGER", "-S", "-aem", "DEST", "-k",
                       "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}")
    assert refused(result), _output(result)
    assert set(world.dest.iterdir()) == before  # nothing was sent
    assert world.audit("C-MOVE")


def test_an_unlisted_ae_may_not_get(world, tmp_path):
    result = subprocess.run(["getscu", "-v", "-aet", "STRANGER", "-aec", "SONOBRIDGE", "-S",
                             "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY", "-k",
                             f"StudyInstanceUID={STUDY}", "127.0.0.1", str(world.port)],
                            capture_output=True, text=True, timeout=120)
    assert refused(result), _output(result)
    assert not list(tmp_path.iterdir())
    assert world.audit("C-GET")


def test_a_listed_ae_finds_moves_and_gets(world, tmp_path):
    found = world.dcm("findscu", "VIEWER", "-S", "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"StudyInstanceUID={STUDY}", "-k", "PatientID")
    assert found.returncode == 0 and "PID-RIGHTS" in found.stdout + found.stderr
    moved = world.dcm("movescu", "VIEWER", "-S", "-aem", "DEST", "-k",
                      "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}")
    assert moved.returncode == 0, _output(moved)
    assert any(dcmread(p).StudyInstanceUID == STUDY for p in world.dest.iterdir())
    got = subprocess.run(["getscu", "-aet", "VIEWER", "-aec", "SONOBRIDGE", "-S", "-od",
                          str(tmp_path), "-k", "QueryRetrieveLevel=STUDY", "-k",
                          f"StudyInstanceUID={STUDY}", "127.0.0.1", str(world.port)],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, _output(got)
    assert [dcmread(p).StudyInstanceUID for p in tmp_path.iterdir()] == [STUDY]


def test_rights_are_per_service(world):
    found = world.dcm("findscu", "FINDONLY", "-S", "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"StudyInstanceUID={STUDY}")
    assert found.returncode == 0 and not refused(found)
    moved = world.dcm("movescu", "FINDONLY", "-S", "-aem", "DEST", "-k",
                      "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}")
    assert refused(moved), _output(moved)
    stored = world.dcm("storescu", "FINDONLY", "-xf", str(FIXTURES / "storescu-us.cfg"), "US",
                       files=(str(world.work / "cine.dcm"),))
    assert refused(stored), _output(stored)


def test_unlisted_rights_can_be_narrowed(tmp_path):
    """SONOBRIDGE_DICOM_UNLISTED_RIGHTS=echo: an unknown modality may not even store."""
    port = free_port()
    source = tmp_path / "cine.dcm"
    source.write_bytes(to_bytes(cine(frames=1, study="2.25.7302")))
    with serve(f"sqlite:///{tmp_path / 'n.db'}", tmp_path, "--no-sample", scu_peers=False,
               SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_DICOM_UNLISTED_RIGHTS="echo"
               ) as (base, _log):
        world = World(base, port, tmp_path, tmp_path)
        assert world.dcm("echoscu", "CART9").returncode == 0
        stored = world.dcm("storescu", "CART9", "-xf", str(FIXTURES / "storescu-us.cfg"),
                           "US", files=(str(source),))
        assert refused(stored), _output(stored)
        assert httpx.get(f"{base}/dicomweb/studies/2.25.7302/metadata").status_code == 404
