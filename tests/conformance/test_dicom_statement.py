"""The DICOM Conformance Statement says what is served, both ways: every SOP class and
transfer syntax it lists is accepted by a running listener, nothing it leaves out is; the
DICOMweb resources and media types it lists are those the routes and the negotiation answer;
the committed docs/dicom-conformance.md is what the command writes now."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from starlette.routing import Mount, Route
from typer.testing import CliRunner

from sonobridge.app.cli.conformance_dicom import facts, generate
from sonobridge.config import Settings
from sonobridge.conformance.dicom import DicomFacts, statement
from sonobridge.conformance.dicom.render import markdown
from sonobridge.core.services import open_core
from tests.live import free_port

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "docs" / "dicom-conformance.md"


@pytest.fixture(scope="module")
def served() -> DicomFacts:
    return facts()


@pytest.fixture(scope="module")
def listener(fresh_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    from sonobridge.hie.dimse.scp import DimseServer

    port = free_port()
    core = open_core(Settings(data_dir=tmp_path_factory.mktemp("dcs"),
                              database_url=fresh_database("sqlite"), auth="disabled",
                              audit=False, dicom_port=port), run_migrations=False)
    server = DimseServer(core)
    server.start()
    try:
        yield port
    finally:
        server.stop()
        core.close()


def _negotiate(port: int, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], bool]:
    """Each (SOP class, transfer syntax) in a context of its own, after a Verification one
    (so that the association is made whatever the rest): accepted or not."""
    result: dict[tuple[str, str], bool] = {}
    for start in range(0, len(pairs), 120):
        chunk = pairs[start:start + 120]
        ae = AE(ae_title="DCSTEST")
        ae.requested_contexts = [build_context(Verification, "1.2.840.10008.1.2"),
                                 *(build_context(sop, ts) for sop, ts in chunk)]
        assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE")
        assert assoc.is_established
        try:
            accepted = {(c.abstract_syntax, c.transfer_syntax[0])
                        for c in assoc.accepted_contexts}
        finally:
            assoc.release()
        for pair in chunk:
            result[pair] = pair in accepted
    return result


def test_every_listed_sop_class_and_transfer_syntax_is_accepted(served, listener):
    pairs = sorted(served.scp_pairs())
    assert len({sop for sop, _ in pairs}) > 170  # every storage class and the services
    refused = [pair for pair, ok in _negotiate(listener, pairs).items() if not ok]
    assert refused == [], f"listed in the statement but refused by the listener: {refused}"


def test_sop_classes_not_listed_are_refused(served, listener):
    from pydicom._uid_dict import UID_dictionary

    listed = {c.sop_class for c in served.scp}
    others = sorted(uid for uid, entry in UID_dictionary.items()
                    if entry[1] in ("SOP Class", "Meta SOP Class") and uid not in listed
                    and not entry[3])  # retired classes left aside
    assert len(others) > 20
    accepted = [pair for pair, ok in _negotiate(
        listener, [(uid, "1.2.840.10008.1.2.1") for uid in others]).items() if ok]
    assert accepted == [], f"served but not in the statement: {accepted}"


def test_transfer_syntaxes_not_listed_are_refused(served, listener):
    by_group: dict[str, tuple[str, set[str]]] = {}
    for c in served.scp:  # one SOP class of each group, every syntax pydicom knows
        by_group.setdefault(c.group, (c.sop_class, set(c.transfer_syntaxes)))
    pairs = [(sop, str(ts)) for sop, listed in by_group.values()
             for ts in AllTransferSyntaxes if str(ts) not in listed]
    pairs += [(sop, "1.2.840.10008.1.2.4.201") for sop, _ in by_group.values()]  # HTJ2K
    accepted = [pair for pair, ok in _negotiate(listener, sorted(set(pairs))).items() if ok]
    assert accepted == [], f"served but not in the statement: {accepted}"


def test_web_resources_are_the_routes_served(served, tmp_path):
    from sonobridge.app.server import create_app

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite",
                        auth="disabled", audit=False, dicom_port=0, mllp_port=0)
    app = create_app(settings)
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/dicomweb":
            for inner in route.routes:
                assert isinstance(inner, Route)
                for method in inner.methods or ("GET", "HEAD"):
                    routes.add(("/dicomweb" + inner.path, method))
        elif isinstance(route, Route) and route.path == "/wado":
            routes |= {("/wado", m) for m in route.methods or ()}
    listed = {(r.path, m) for r in served.web_resources for m in r.methods}
    assert listed == routes


def test_web_media_types_are_what_negotiation_accepts(served):
    from sonobridge.core.imaging.frames import MEDIA_BY_SYNTAX
    from sonobridge.dicomweb import negotiate, rendering
    from sonobridge.dicomweb.errors import DicomwebError
    from sonobridge.hie.dimse.scp import STORE_SYNTAXES

    listed_frames = {(m.media_type, m.transfer_syntax) for m in served.media
                     if m.service.startswith("WADO-RS frames")}
    listed_instances = {m.transfer_syntax for m in served.media
                        if m.service == "WADO-RS instances" and m.transfer_syntax}
    listed_rendered = {(m.media_type, m.note == "multi-frame") for m in served.media
                       if m.service.startswith("WADO-RS rendered")}
    syntaxes = sorted({*STORE_SYNTAXES, *MEDIA_BY_SYNTAX, *map(str, AllTransferSyntaxes),
                       "1.2.840.10008.1.2.4.201"})
    parts = sorted({"application/octet-stream", "image/png", "image/webp", "application/pdf",
                    "image/jxl", "text/html", *MEDIA_BY_SYNTAX.values()})
    for stored in STORE_SYNTAXES:
        for part in parts:
            for ts in (None, "*", *syntaxes):
                accept = f'multipart/related; type="{part}"' + (
                    f"; transfer-syntax={ts}" if ts else "")
                try:
                    choice = negotiate.choose_frames(accept, stored, 1)
                except DicomwebError:
                    continue
                assert (choice.part_type, choice.transfer_syntax) in listed_frames, accept
    for media, ts in listed_frames:  # the reverse: each listed one is produced
        stored = ts  # frames stored in that syntax
        choice = negotiate.choose_frames(f'multipart/related; type="{media}"; '
                                         f"transfer-syntax={ts}", stored, 1)
        assert (choice.part_type, choice.transfer_syntax) == (media, ts)
    for ts in syntaxes:
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={ts}'
        try:
            choice = negotiate.choose_instances(accept, {"1.2.840.10008.1.2.4.90",
                                                         "1.2.840.10008.1.2.5"})
        except DicomwebError:
            assert ts not in listed_instances
            continue
        assert choice.transfer_syntax in listed_instances
    for multiframe in (False, True):
        for media in ("image/jpeg", "image/png", "image/gif", "video/mp4", "image/webp",
                      "image/jp2", "application/pdf", "video/H265"):
            try:
                chosen = rendering.choose(media, multiframe=multiframe)
            except DicomwebError:
                assert (media, multiframe) not in listed_rendered
                continue
            assert (chosen, multiframe) in listed_rendered


def test_md_and_html_name_every_service_and_uid(served):
    md = markdown(statement(served))
    html = generate("html").decode()
    for text in (md, html):
        for service in ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET", "MWL C-FIND",
                        "MPPS N-CREATE, N-SET", "N-ACTION", "QIDO-RS", "WADO-RS", "STOW-RS",
                        "WADO-URI", "ISO_IR 192", "GB18030", "GBK", "ISO_IR 100"):
            assert service in text, service
        for sop, ts in served.scp_pairs():
            assert sop in text and ts in text
    for section in ("Overview", "Table of contents", "Introduction", "Networking",
                    "Implementation model", "AE specifications", "Network interfaces",
                    "Configuration", "Media interchange", "Support of character sets",
                    "Security", "Annexes", "Web services"):
        assert section in md
    assert "<style>" in html and "http://" not in html and "<script" not in html
    assert UID("1.2.840.10008.5.1.4.1.1.6.1").name in md  # names, not only UIDs


def test_command_writes_each_format(tmp_path):
    from sonobridge.app.cli.main import app

    runner = CliRunner()
    out = tmp_path / "dcs.html"
    result = runner.invoke(app, ["conformance", "dicom", "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["conformance", "dicom", "--format", "pdf", "--out",
                                 str(tmp_path / "dcs.pdf")])
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        assert result.exit_code == 2 and "weasyprint" in result.output.lower()
    else:
        assert result.exit_code == 0, result.output
        assert (tmp_path / "dcs.pdf").read_bytes().startswith(b"%PDF")


def test_committed_statement_is_current():
    assert COMMITTED.read_text() == generate("md").decode(), (
        "docs/dicom-conformance.md is stale: run `sonobridge conformance dicom --format md "
        "--out docs/dicom-conformance.md`")
