"""The DICOMweb proxy fetching by C-MOVE, for a peer configured with ``retrieve=move``: the
"legacy PACS" is a second SonoBridge that knows the gateway as a move destination; what it
sends arrives through the gateway's C-STORE listener. Plus the peer option's parsing."""

from __future__ import annotations

import shutil

import httpx
import pytest

from sonobridge.config import ConfigError
from sonobridge.hie.dimse.peers import Peer, parse_peer
from tests.interop.test_pacs_proxy import legacy_pacs
from tests.live import free_port, needs_dcmtk


def test_peer_options():
    assert parse_peer("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104, "get")
    assert parse_peer("PACS@10.0.0.5:104:retrieve=move") == Peer("PACS", "10.0.0.5", 104,
                                                                 "move")
    assert parse_peer("PACS@[::1]:104:retrieve=get") == Peer("PACS", "::1", 104, "get")
    for bad in ("PACS@10.0.0.5:104:retrieve=push", "PACS@10.0.0.5:104:tls=on",
                "PACS@10.0.0.5:retrieve=move"):
        with pytest.raises(ConfigError):
            parse_peer(bad)


def test_peers_from_the_setting_and_the_file(tmp_path):
    from sonobridge.config import Settings
    from sonobridge.hie.dimse.peers import load_peers

    listed = tmp_path / "peers.txt"
    listed.write_text("# the county PACS\n  PACS@10.0.0.5:104:retrieve=move\n\n"
                      "CART1@10.0.1.9:104\n")
    peers = load_peers(Settings(data_dir=tmp_path, dicom_peers="STORESCP@127.0.0.1:11113",
                                dicom_peers_file=str(listed)))
    assert peers == {"STORESCP": Peer("STORESCP", "127.0.0.1", 11113),
                     "PACS": Peer("PACS", "10.0.0.5", 104, "move"),
                     "CART1": Peer("CART1", "10.0.1.9", 104)}
    with pytest.raises(ConfigError, match="cannot read the DICOM peers file"):
        load_peers(Settings(data_dir=tmp_path, dicom_peers_file=str(tmp_path / "none.txt")))


def _metric(base: str, operation: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sonobridge_dimse_operations_total{") and \
                f'operation="{operation}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@needs_dcmtk
def test_dicomweb_over_a_pacs_that_only_moves(tmp_path):
    with legacy_pacs(tmp_path, "2.25.8811", "LEGACY-2",
                     pacs_peers="SONOBRIDGE@127.0.0.1:{gateway}",
                     gateway_peer_options=":retrieve=move",
                     SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY="true") as (ds, pacs, base):
        peers = f"{base}/dicomweb/peers/LEGACY"
        assert httpx.get(f"{base}/dicomweb/studies/2.25.8811/metadata").status_code == 404
        metadata = httpx.get(f"{peers}/studies/2.25.8811/metadata", timeout=60)
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()[0]["00080018"]["Value"][0] == ds.SOPInstanceUID
        frame = httpx.get(f"{peers}/studies/2.25.8811/series/{ds.SeriesInstanceUID}/instances/"
                          f"{ds.SOPInstanceUID}/frames/3", timeout=60,
                          headers={"Accept": 'multipart/related; type="image/jpeg"'})
        assert frame.status_code == 200 and b"\xff\xd8" in frame.content
        imaging = httpx.get(f"{base}/fhir/ImagingStudy/2.25.8811").json()
        assert imaging["numberOfInstances"] == 1
        # fetched by C-MOVE, stored through the gateway's C-STORE listener, never by C-GET
        assert _metric(pacs, "C-MOVE") == 1 and _metric(pacs, "C-GET") == 0
        assert _metric(base, "C-STORE") == 1
        # the stored bytes, as the PACS holds them
        original = httpx.get(f"{pacs}/dicomweb/studies/2.25.8811/series/{ds.SeriesInstanceUID}"
                             f"/instances/{ds.SOPInstanceUID}", timeout=60, headers={
                                 "Accept": 'multipart/related; type="application/dicom"; '
                                           "transfer-syntax=*"})
        here = httpx.get(f"{base}/dicomweb/studies/2.25.8811/series/{ds.SeriesInstanceUID}"
                         f"/instances/{ds.SOPInstanceUID}", timeout=60, headers={
                             "Accept": 'multipart/related; type="application/dicom"; '
                                       "transfer-syntax=*"})
        assert original.status_code == here.status_code == 200
        assert _part(original) == _part(here)
        missing = httpx.get(f"{peers}/studies/2.25.9999/metadata", timeout=60)
        assert missing.status_code == 404


def _part(response: httpx.Response) -> bytes:
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"').encode()
    body = response.content.split(b"--" + boundary)[1]
    return body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def test_a_pacs_that_does_not_know_us_is_a_502_that_says_so(tmp_path, sqlite_template):
    """A pynetdicom SCP as the PACS, answering every C-MOVE with A801."""
    from dataclasses import replace

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    from sonobridge.app.compose import open_app_core as open_core
    from sonobridge.config import Settings
    from sonobridge.core.errors import CoreError
    from sonobridge.hie.dimse.proxy import Proxy

    moves: list[str] = []

    def on_move(event):
        moves.append(event.move_destination)
        yield None, None  # destination unknown

    scp = AE(ae_title="STRANGER")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_MOVE, on_move)])
    database = tmp_path / "gw.db"
    shutil.copy(sqlite_template, database)
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{database}",
                                auth="disabled", audit=False),
                       dicom_peers=f"STRANGER@127.0.0.1:{port}:retrieve=move")
    core = open_core(settings, run_migrations=False)
    try:
        with pytest.raises(CoreError) as refused:
            Proxy(core).fetch(core.server, "STRANGER", "2.25.8812", None, None)
    finally:
        core.close()
        server.shutdown()
    assert moves == ["SONOBRIDGE"]
    assert refused.value.status == 502
    assert "does not know SONOBRIDGE as a move destination" in refused.value.message
