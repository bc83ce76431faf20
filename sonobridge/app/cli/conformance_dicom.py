"""``sonobridge conformance dicom``: the DICOM Conformance Statement (PS3.2), written from what
the DIMSE listener and the DICOMweb routes register (see ``app/cli/conformance.py``).

``facts()`` gathers that here, in the composition layer, because the statement's edge
(``conformance/``) may not import the DIMSE and DICOMweb edges: the listener's presentation
contexts (``hie/dimse/scp.py``), the SCU's (``hie/dimse/scu.py``, ``retrieve.py``), the
DICOMweb route table and its content negotiation, probed with the media types and transfer
syntaxes a client could ask for.
"""

from __future__ import annotations

import sys
from itertools import product
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import typer

from sonobridge.config import Settings
from sonobridge.conformance.dicom import (
    FORMATS,
    Context,
    DicomFacts,
    MediaOffer,
    WebResource,
    render,
    statement,
)
from sonobridge.conformance.dicom.render import RenderError

RETRIEVE_NOTE = {"stored": "as stored", "native": "stored native pixels",
                 "decode": "decoded", "": ""}


def _group(uid: str) -> str:
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
        ModalityPerformedProcedureStep,
        ModalityWorklistInformationFind,
        Verification,
    )

    from sonobridge.hie.dimse import commitment, scp

    if uid == Verification:
        return "Verification"
    if uid == commitment.STORAGE_COMMITMENT:
        return "Storage Commitment"
    if uid == ModalityWorklistInformationFind:
        return "Modality Worklist"
    if uid == ModalityPerformedProcedureStep:
        return "Modality Performed Procedure Step"
    if uid in scp.QUERY_RETRIEVE_CLASSES:
        return "Query/Retrieve"
    return "Storage"


def _scp_contexts() -> tuple[Context, ...]:
    from sonobridge.hie.dimse import scp

    return tuple(Context(uid, tuple(syntaxes), "SCP", _group(uid), both)
                 for uid, syntaxes, both in scp.supported_contexts())


def _scu_contexts(storage: list[str]) -> tuple[Context, ...]:
    from pynetdicom._globals import DEFAULT_TRANSFER_SYNTAXES
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
        Verification,
    )

    from sonobridge.hie.dimse import commitment, scp, scu

    default = tuple(DEFAULT_TRANSFER_SYNTAXES)  # what ``add_requested_context`` proposes
    contexts = [Context(Verification, default, "SCU", "Verification")]
    contexts += [Context(uid, default, "SCU", "Query/Retrieve") for uid in (
        PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet)]
    # C-MOVE/C-GET sub-operations and forwarding (retrieve.move_contexts): the stored syntax
    # of each object and both uncompressed ones.
    sent = ("*", *scp.NATIVE[::-1])
    contexts += [Context(uid, sent, "SCU", "Storage (C-MOVE, C-GET, forwarding)")
                 for uid in storage]
    contexts += [Context(uid, tuple(syntaxes), "SCU", "Storage (C-MOVE with nothing to send)")
                 for uid, syntaxes in scp.get_storage_contexts()]
    # C-GET as requestor: the objects come back to us (SCP role proposed).
    for uid in scu.GET_STORAGE_CLASSES:
        syntaxes = scu.GET_SYNTAXES if uid in scu.GET_EVERY_SYNTAX else scu.GET_SYNTAXES[:2]
        contexts.append(Context(uid, tuple(syntaxes), "SCP", "Storage (received on C-GET)",
                                True))
    contexts.append(Context(commitment.STORAGE_COMMITMENT, default, "SCP",
                            "Storage Commitment (report on a new association)", True))
    return tuple(contexts)


def _web_resources() -> tuple[WebResource, ...]:
    from starlette.routing import Mount, Route

    from sonobridge.dicomweb.routes import DicomWebApp

    app = DicomWebApp(SimpleNamespace(archive=None), configured_base=None,  # type: ignore[arg-type]
                      threads=1)
    searches = ("/studies", "/series", "/instances")
    resources: list[WebResource] = []
    for mount in app.routes():
        assert isinstance(mount, Mount)
        for route in mount.routes:
            assert isinstance(route, Route)
            path = mount.path + route.path
            methods = sorted(route.methods or ())
            if not methods:
                resources.append(WebResource("PACS proxy (QIDO-RS, WADO-RS over DIMSE)", path,
                                             ("GET", "HEAD")))
                continue
            reads = tuple(m for m in methods if m in ("GET", "HEAD"))
            search = route.path.endswith(searches)
            if reads:
                resources.append(WebResource("QIDO-RS" if search else "WADO-RS", path, reads))
            if "POST" in methods:
                resources.append(WebResource("STOW-RS", path, ("POST",)))
            if "DELETE" in methods:
                resources.append(WebResource("Delete (not in PS3.18)", path, ("DELETE",)))
    resources.append(WebResource("WADO-URI", "/wado", ("GET", "HEAD")))
    return tuple(resources)


def _media(store_syntaxes: list[str]) -> tuple[MediaOffer, ...]:
    """What the DICOMweb negotiation accepts, probed with what a client could ask for."""
    from sonobridge.core.imaging.frames import MEDIA_BY_SYNTAX
    from sonobridge.dicomweb import negotiate, rendering
    from sonobridge.dicomweb.errors import DicomwebError

    offers: list[MediaOffer] = []

    def add(offer: MediaOffer) -> None:
        if offer not in offers:
            offers.append(offer)

    asked: list[str | None] = [None, "*", *store_syntaxes, *sorted(set(MEDIA_BY_SYNTAX))]
    # Study, series and instance retrieval: two stored syntaxes, so that none is "the" one.
    for ts in asked:
        accept = 'multipart/related; type="application/dicom"' + (
            f"; transfer-syntax={ts}" if ts else "")
        try:
            choice = negotiate.choose_instances(accept, {"1.2.840.10008.1.2.4.90",
                                                         "1.2.840.10008.1.2.5"})
        except DicomwebError:
            continue
        add(MediaOffer("WADO-RS instances", "multipart/related; type=application/dicom",
                       choice.transfer_syntax,
                       "as stored" if choice.mode == "stored" else "transcoded"))
    add(MediaOffer("WADO-RS instances", "multipart/related; type=application/dicom",
                   "", "the stored syntax, when every object retrieved has that one"))
    parts = ["application/octet-stream", *sorted(set(MEDIA_BY_SYNTAX.values())), "image/png"]
    for stored, part, ts in product(store_syntaxes, parts, asked):
        accept = f'multipart/related; type="{part}"' + (f"; transfer-syntax={ts}" if ts
                                                         else "")
        try:
            choice = negotiate.choose_frames(accept, stored, 1)
        except DicomwebError:
            continue
        mode = RETRIEVE_NOTE.get(choice.mode, "transcoded")
        add(MediaOffer("WADO-RS frames, bulkdata", choice.part_type, choice.transfer_syntax,
                       mode))
    for multiframe in (False, True):
        for media in ("image/jpeg", "image/png", "image/gif", "video/mp4", "image/webp",
                      "image/jp2", "video/mpeg2"):
            try:
                chosen = rendering.choose(media, multiframe=multiframe)
            except DicomwebError:
                continue
            add(MediaOffer("WADO-RS rendered, thumbnail", chosen, "",
                           "multi-frame" if multiframe else "single frame"))
    for media in ("application/dicom+json", 'multipart/related; type="application/dicom+xml"'):
        add(MediaOffer("QIDO-RS", media))
    add(MediaOffer("WADO-RS metadata", "application/dicom+json"))
    for media in ('multipart/related; type="application/dicom"',
                  'multipart/related; type="application/dicom+json" (bulk data parts '
                  "image/jpeg, application/octet-stream)"):
        add(MediaOffer("STOW-RS (request)", media, "*", "stored as received"))
    add(MediaOffer("STOW-RS (response)", "application/dicom+json"))
    for media in ("application/dicom", "image/jpeg", "image/png", "image/gif"):
        add(MediaOffer("WADO-URI", media, "*" if media == "application/dicom" else ""))
    return tuple(offers)


SETTINGS_DOC = (
    ("SONOBRIDGE_DICOM_AET", "dicom_aet", "our AE title"),
    ("SONOBRIDGE_DICOM_HOST", "dicom_host", "address the DIMSE listener binds"),
    ("SONOBRIDGE_DICOM_PORT", "dicom_port", "DIMSE listener port (0: off)"),
    ("SONOBRIDGE_DICOM_PEERS", "dicom_peers",
     "known remote AEs: AET@host:port[:retrieve=get|move][:rights=…][:issuer=…]"),
    ("SONOBRIDGE_DICOM_PEERS_FILE", "dicom_peers_file", "more peers, one per line"),
    ("SONOBRIDGE_DICOM_UNLISTED_RIGHTS", "dicom_unlisted_rights",
     "what a calling AE title that is not listed may do"),
    ("SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY", "dicom_known_callers_only",
     "refuse associations from unlisted calling AE titles"),
    ("SONOBRIDGE_DICOM_FORWARD", "dicom_forward", "forwarding rules DEST[:key=value,…];…"),
    ("SONOBRIDGE_DICOM_WORKLIST_STATIONS", "dicom_worklist_stations",
     "worklist stations of orders without a modality Device"),
    ("SONOBRIDGE_DICOM_MAX_OBJECT_SIZE", "dicom_max_object_size",
     "largest object stored, in bytes"),
    ("SONOBRIDGE_PATIENT_ID_ISSUER", "patient_id_issuer",
     "issuer assumed for Patient IDs without one"),
    ("SONOBRIDGE_AUDIT_SYSLOG", "audit_syslog", "RFC 5424 syslog receiver of the audit trail"),
    ("SONOBRIDGE_AUDIT_READ_WINDOW", "audit_read_window",
     "seconds a caller's reads of a study make one audit event"),
)


def facts(settings: Settings | None = None) -> DicomFacts:
    """What is served, for the statement (defaults unless ``settings`` is given)."""
    import pynetdicom
    from pydicom.charset import python_encoding
    from pynetdicom._globals import DEFAULT_MAX_LENGTH

    from sonobridge import __version__
    from sonobridge.core.imaging.query import CONTROL
    from sonobridge.core.policy import DIMSE_SERVICES
    from sonobridge.hie.dimse import scp

    s = settings or Settings()
    scp_contexts = _scp_contexts()
    storage = [c.sop_class for c in scp_contexts if c.group == "Storage"]
    rights_doc = {"echo": "C-ECHO", "store": "C-STORE", "find": "C-FIND (Patient Root, Study "
                  "Root)", "move": "C-MOVE (to a known peer)", "get": "C-GET",
                  "worklist": "Modality Worklist C-FIND", "mpps": "MPPS N-CREATE, N-SET",
                  "commit": "Storage Commitment N-ACTION"}
    values: dict[str, Any] = {name: getattr(s, name, "") for _, name, _ in SETTINGS_DOC}
    return DicomFacts(
        product="SonoBridge", version=__version__, ae_title=s.dicom_aet, host=s.dicom_host,
        port=s.dicom_port,
        implementation_class_uid=pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version_name=pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION,
        max_pdu_receive=DEFAULT_MAX_LENGTH, max_associations=scp.MAX_ASSOCIATIONS,
        timeouts=dict(scp.TIMEOUTS), scp=scp_contexts, scu=_scu_contexts(storage),
        dimse_rights=(*((r, rights_doc.get(r, r)) for r in DIMSE_SERVICES),
                      ("all", "every service (a listed peer's default)"), ("none", "nothing")),
        unlisted_rights=s.dicom_unlisted_rights, known_callers_only=s.dicom_known_callers_only,
        web_resources=_web_resources(), media=_media(list(scp.STORE_SYNTAXES)),
        character_sets_accepted=tuple(c for c in sorted(python_encoding) if c),
        character_set_answered="ISO_IR 192",  # hie/dimse/find.py and worklist.py answer so
        settings=tuple((env, str(values[name]) if values[name] != "" else "(empty)", doc)
                       for env, name, doc in SETTINGS_DOC),
        extra={"qido_controls": ", ".join(f"`{c}`" for c in sorted(CONTROL))})


def generate(fmt: str, settings: Settings | None = None) -> bytes:
    return render(statement(facts(settings)), fmt)


def register(conformance_app: typer.Typer, ig_app: typer.Typer) -> None:
    """Add ``sonobridge conformance dicom``."""

    @conformance_app.command("dicom")
    def dicom(
        fmt: str = typer.Option("md", "--format", help=f"one of {', '.join(FORMATS)}"),
        out: Path | None = typer.Option(None, "--out", help="file to write (default: stdout; "
                                        "pdf needs --out)"),
    ) -> None:
        """The DICOM Conformance Statement (PS3.2), from the SOP classes, transfer syntaxes
        and DICOMweb media types this build serves."""
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        if fmt == "pdf" and out is None:
            raise typer.BadParameter("--format pdf needs --out FILE")
        try:
            data = generate(fmt)
        except RenderError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if out is None:
            sys.stdout.write(data.decode())
        else:
            out.write_bytes(data)
            typer.echo(f"wrote {out} ({len(data)} bytes)", err=True)
