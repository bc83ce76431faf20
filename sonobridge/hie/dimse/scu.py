"""SonoBridge as a DICOM SCU: echo, find and move against a remote AE, and C-STORE of stored
files in their own transfer syntax (forwarding)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

# The SOP classes are made at import time (into the module's globals), which pynetdicom's
# annotations cannot show.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from sonobridge.hie.dimse import sockets
from sonobridge.hie.dimse.peers import Peer
from sonobridge.hie.dimse.retrieve import (
    Stored,
    StoredObject,
    move_contexts,
    send_stored_files,
)
from sonobridge.store.blobs import BlobStore

if TYPE_CHECKING:
    from pynetdicom.pdu_primitives import _UI as Negotiation  # what ``ext_neg`` items may be


class ScuError(RuntimeError):
    """The remote AE could not be reached or refused the association."""


def _associate(aet: str, peer: Peer, contexts: Sequence[str | PresentationContext]
               ) -> Association:
    ae = AE(ae_title=aet)
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 60
    for context in contexts:
        if isinstance(context, str):
            ae.add_requested_context(context)
        else:
            ae.requested_contexts = [*ae.requested_contexts, context]
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                         evt_handlers=sockets.REQUESTOR_HANDLERS)
    if not assoc.is_established:
        raise ScuError(f"{peer.aet} at {peer.host}:{peer.port} did not accept the association")
    return assoc


def echo(aet: str, peer: Peer) -> int:
    assoc = _associate(aet, peer, [Verification])
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else -1
    finally:
        assoc.release()


def find(aet: str, peer: Peer, identifier: Dataset, patient_root: bool = False
         ) -> Iterator[Dataset]:
    model = PatientRootQueryRetrieveInformationModelFind if patient_root else \
        StudyRootQueryRetrieveInformationModelFind
    assoc = _associate(aet, peer, [model])
    try:
        for status, found in assoc.send_c_find(identifier, model):
            if status and status.Status in (0xFF00, 0xFF01) and found is not None:
                yield found
    finally:
        assoc.release()


def move(aet: str, peer: Peer, destination: str, identifier: Dataset,
         patient_root: bool = False) -> tuple[int, int, int]:
    """(final status, completed, failed) of a C-MOVE asking ``peer`` to send to
    ``destination``."""
    model = PatientRootQueryRetrieveInformationModelMove if patient_root else \
        StudyRootQueryRetrieveInformationModelMove
    assoc = _associate(aet, peer, [model])
    final = (-1, 0, 0)
    try:
        for status, _ in assoc.send_c_move(identifier, destination, model):
            if status and "Status" in status:
                final = (int(status.Status),
                         int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                         int(status.get("NumberOfFailedSuboperations", 0) or 0))
    finally:
        assoc.release()
    return final


def store(aet: str, peer: Peer, instances: list[Stored], blobs: BlobStore
          ) -> dict[str, str | None]:
    """C-STORE stored files as C-MOVE sends them: as they are when the peer accepts their
    syntax, else an uncompressed copy (decoded frame by frame), through a bounded send queue.
    Returns an error per SOP Instance UID, ``None`` for the ones stored."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = _associate(aet, peer, move_contexts(instances))
    send_stored_files(assoc, blobs)
    results: dict[str, str | None] = {}
    try:
        for item in instances:
            try:
                status = assoc.send_c_store(StoredObject(item))
            except (ValueError, RuntimeError) as exc:  # nothing accepted it can be sent in
                results[item.sop_uid] = str(exc)[:300]
                continue
            code = int(status.Status) if "Status" in status else -1
            ok = code == 0 or 0xB000 <= code <= 0xBFFF
            results[item.sop_uid] = None if ok else f"C-STORE status 0x{code & 0xFFFF:04X}"
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results


# Storage classes a C-GET asks the peer to send back (PS3.4 C.4.3 role selection); at most
# 127 besides the Get context itself.
GET_STORAGE_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.6.2",
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4", "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.4.1",
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
]
GET_EVERY_SYNTAX = {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1",
                    "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.7"}
GET_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
                "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.102",
                "1.2.840.10008.1.2.4.103"]


def get(aet: str, peer: Peer, identifier: Dataset, receive: Callable[[Event], int]
        ) -> tuple[int, int, int]:
    """C-GET from ``peer``; each object arrives through ``receive(event) -> status``.
    Returns (final status, completed, failed)."""
    from pynetdicom import evt
    from pynetdicom.presentation import build_role
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
        StudyRootQueryRetrieveInformationModelGet as GET,
    )

    ae = AE(ae_title=aet)
    ae.acse_timeout = 30
    ae.dimse_timeout = 300
    ae.network_timeout = 120
    ae.add_requested_context(GET)
    roles: list[Negotiation] = []
    # The peer picks one transfer syntax per context: ultrasound and secondary capture get a
    # context per syntax (so cines come back as stored), the rest uncompressed.
    for sop_class in GET_STORAGE_CLASSES:
        syntaxes = GET_SYNTAXES if sop_class in GET_EVERY_SYNTAX else GET_SYNTAXES[:2]
        for syntax in syntaxes:
            ae.add_requested_context(sop_class, syntax)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, receive), *sockets.REQUESTOR_HANDLERS])
    if not assoc.is_established:
        raise ScuError(f"{peer.aet} at {peer.host}:{peer.port} did not accept the association")
    final = (-1, 0, 0)
    try:
        for status, _ in assoc.send_c_get(identifier, GET):
            if status and "Status" in status:
                final = (int(status.Status),
                         int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                         int(status.get("NumberOfFailedSuboperations", 0) or 0))
    finally:
        if assoc.is_established:
            assoc.release()
    return final
