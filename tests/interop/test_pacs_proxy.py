"""A DIMSE-only PACS read through DICOMweb: QIDO by C-FIND, WADO after a C-GET. The "legacy
PACS" is a second SonoBridge reached only over DIMSE; objects reach it with dcmtk storescu."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydicom.dataset import Dataset

from tests.dicom_data import cine, to_bytes
from tests.live import free_port, needs_dcmtk, serve

FIXTURES = Path(__file__).parent.parent / "fixtures"

pytestmark = needs_dcmtk


@contextlib.contextmanager
def legacy_pacs(tmp_path: Path, study: str, patient_id: str, *,
                pacs_peers: str = "SONOBRIDGE@127.0.0.1:{gateway}",
                gateway_peer_options: str = "", **gateway_env: str
                ) -> Iterator[tuple[Dataset, str, str]]:
    """A "legacy PACS" (a SonoBridge reached only over DIMSE, AE LEGACY) holding one 3-frame
    JPEG cine stored there by dcmtk storescu, and a gateway that knows it as a peer: yields
    (the cine, the PACS's HTTP base, the gateway's HTTP base). ``pacs_peers`` may name the
    gateway's AE (``{gateway}`` stands for its DIMSE port)."""
    pacs_port, gateway_dicom = free_port(), free_port()
    ds = cine(frames=3, study=study, patient_id=patient_id, patient_name="Zhou^Min")
    path = tmp_path / "legacy.dcm"
    path.write_bytes(to_bytes(ds))
    pacs_dir, gateway_dir = tmp_path / "pacs", tmp_path / "gateway"
    pacs_dir.mkdir()
    gateway_dir.mkdir()
    with serve(f"sqlite:///{pacs_dir / 'pacs.db'}", pacs_dir, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(pacs_port), SONOBRIDGE_DICOM_AET="LEGACY",
               SONOBRIDGE_DICOM_PEERS=pacs_peers.format(gateway=gateway_dicom)
               ) as (pacs, _), \
            serve(f"sqlite:///{gateway_dir / 'gw.db'}", gateway_dir, "--no-sample",
                  SONOBRIDGE_DICOM_PORT=str(gateway_dicom),
                  SONOBRIDGE_DICOM_PEERS=f"LEGACY@127.0.0.1:{pacs_port}{gateway_peer_options}",
                  **gateway_env) as (base, _log):
        stored = subprocess.run(["storescu", "-xf", str(FIXTURES / "storescu-us.cfg"), "US",
                                 "-aec", "LEGACY", "127.0.0.1", str(pacs_port), str(path)],
                                capture_output=True, text=True, timeout=60)
        assert stored.returncode == 0, stored.stderr
        yield ds, pacs, base


def test_dicomweb_over_a_dimse_only_pacs(tmp_path):
    with legacy_pacs(tmp_path, "2.25.8801", "LEGACY-1") as (ds, _pacs, base):
        peers = f"{base}/dicomweb/peers/LEGACY"
        studies = httpx.get(f"{peers}/studies", params={"PatientID": "LEGACY-1"}, timeout=60)
        assert studies.status_code == 200, studies.text
        found = studies.json()
        assert [s["0020000D"]["Value"][0] for s in found] == ["2.25.8801"]
        assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Zhou^Min"
        assert httpx.get(f"{peers}/studies", params={"PatientID": "NOBODY"}).status_code == 204
        series = httpx.get(f"{peers}/studies/2.25.8801/series", timeout=60).json()
        assert series[0]["0020000E"]["Value"][0] == ds.SeriesInstanceUID
        assert httpx.get(f"{base}/dicomweb/studies/2.25.8801/metadata").status_code == 404
        metadata = httpx.get(f"{peers}/studies/2.25.8801/metadata", timeout=60)
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()[0]["00080018"]["Value"][0] == ds.SOPInstanceUID
        frame = httpx.get(f"{peers}/studies/2.25.8801/series/{ds.SeriesInstanceUID}/instances/"
                          f"{ds.SOPInstanceUID}/frames/2", timeout=60,
                          headers={"Accept": 'multipart/related; type="image/jpeg"'})
        assert frame.status_code == 200 and b"\xff\xd8" in frame.content
        # it is now here, with its ImagingStudy
        assert httpx.get(f"{base}/dicomweb/studies/2.25.8801/metadata").status_code == 200
        assert httpx.get(f"{base}/fhir/ImagingStudy/2.25.8801").json()["numberOfInstances"] == 1
        missing = httpx.get(f"{peers}/studies/2.25.9999/metadata", timeout=60)
        assert missing.status_code in (404, 502)
        unknown = httpx.get(f"{base}/dicomweb/peers/NOWHERE/studies")
        assert unknown.status_code == 404
