"""C-MOVE and C-GET: which instances an identifier names, the presentation contexts to offer
them in, and how each is sent: the stored file as it is when the peer accepted its transfer
syntax, else an uncompressed copy (``transcode``), else a failed sub-operation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext, build_context

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging import transcode
from sonobridge.core.imaging.archive import Archive
from sonobridge.store.blobs import BlobStore
from sonobridge.store.dicom.index import StoredInstance

log = logging.getLogger("sonobridge.dimse.retrieve")

MAX_CONTEXTS = 128
# P-DATA PDUs that may wait for the socket, per association: 2 MB at the usual 16 KB PDUs
SEND_QUEUE_PDUS = 128


@dataclass(frozen=True)
class Stored:
    """An instance to send: what a presentation context and the blob store need."""

    sop_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str

    @classmethod
    def of(cls, row: StoredInstance) -> Stored:
        return cls(row.sop_uid, row.study_uid, row.sop_class_uid, row.transfer_syntax,
                   row.blob_key)


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    raw = identifier.get(keyword)
    if raw is None or raw == "":
        return []
    values = raw if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue" \
        else str(raw).split("\\")
    return [str(v).strip() for v in values if str(v).strip()]


def matching(archive: Archive, identifier: Dataset) -> list[Stored]:
    """The stored instances named by a retrieve identifier (unique keys per level)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    patient_ids: list[str] = []
    if level == "PATIENT":
        patient_ids = _uids(identifier, "PatientID")
        if not patient_ids:
            return []
    rows = archive.retrieve_matches(
        patient_ids=patient_ids, study_uids=_uids(identifier, "StudyInstanceUID"),
        series_uids=_uids(identifier, "SeriesInstanceUID"),
        sop_uids=_uids(identifier, "SOPInstanceUID"))
    return [Stored.of(row) for row in rows]


def move_contexts(instances: list[Stored]) -> list[PresentationContext]:
    """What a C-MOVE (or forwarding) proposes to its destination: per SOP class, a context
    for each stored compressed syntax (sent byte for byte if accepted) and one with both
    uncompressed syntaxes (the fallback nearly every peer accepts), the class's more common
    native syntax first.

    At most 128: first the contexts without which some instance could not be sent at all (the
    uncompressed one of each class that has a decodable instance, the stored syntax of what
    cannot be decoded, e.g. video), then the stored syntaxes of decodable instances, those
    of the most instances first."""
    syntaxes: dict[str, Counter[str]] = {}
    for item in instances:
        syntaxes.setdefault(item.sop_class_uid, Counter())[item.transfer_syntax] += 1
    needed: list[tuple[str, list[str]]] = []
    optional: list[tuple[int, str, list[str]]] = []
    for sop_class, counts in syntaxes.items():
        if any(transcode.can_convert(syntax) for syntax in counts):
            native = sorted(transcode.UNCOMPRESSED,
                            key=lambda s: (-counts[s], s != transcode.EXPLICIT_LE))
            needed.append((sop_class, native))
        for syntax, count in counts.most_common():
            if syntax in transcode.UNCOMPRESSED:
                continue
            if transcode.can_convert(syntax):
                optional.append((count, sop_class, [syntax]))
            else:
                needed.append((sop_class, [syntax]))
    optional.sort(key=lambda entry: -entry[0])
    chosen = [*needed, *((sop_class, syntax) for _, sop_class, syntax in optional)]
    if len(chosen) > MAX_CONTEXTS:
        log.warning("C-MOVE: %d presentation contexts wanted, %d proposed", len(chosen),
                    MAX_CONTEXTS)
    return [build_context(sop_class, list(syntax)) for sop_class, syntax in
            chosen[:MAX_CONTEXTS]]


class StoredObject(Dataset):
    """What a C-MOVE/C-GET handler yields for one instance: pynetdicom 3.0 takes only datasets
    there (``service_class._get_scp``/``_move_scp`` count anything else as a failure) and would
    encode a read dataset in memory; this one carries the stored file, which the association's
    ``send_c_store`` (see :func:`send_stored_files`) sends from disk. Its SOP Instance UID is
    what pynetdicom lists as failed if the sub-operation fails."""

    def __init__(self, stored: Stored) -> None:
        super().__init__()
        self.SOPClassUID = stored.sop_class_uid
        self.SOPInstanceUID = stored.sop_uid
        self.stored = stored


def send_stored_files(assoc: Any, blobs: BlobStore) -> None:
    """Make ``assoc.send_c_store`` send a :class:`StoredObject` from its file: as stored when
    the peer accepted (SOP class, stored syntax), else decoded into a temporary uncompressed
    copy in the blob store's scratch folder when it accepted Explicit or Implicit VR Little
    Endian (``core/imaging/transcode.py``, one frame in memory at a time); otherwise it
    raises ``ValueError``, which pynetdicom counts as a failed sub-operation. Other datasets
    are sent as before.

    pynetdicom sends a file path chunk by chunk (``STORE_SEND_CHUNKED_DATASET``) but only
    through ``send_c_store``, and its C-GET/C-MOVE service calls that with the yielded
    dataset: wrapping this association's method is the one place both meet."""
    if getattr(assoc, "_sends_stored_files", False):  # a second C-GET on the association
        return
    assoc._sends_stored_files = True
    original = assoc.send_c_store
    _bound_send_queue(assoc.dul)

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, StoredObject):
            return original(dataset, *args, **kwargs)
        item = dataset.stored
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == item.sop_class_uid and cx.as_scu}
        if item.transfer_syntax in accepted:
            with blobs.local_copy(item.blob_key) as path:
                return original(path, *args, **kwargs)
        target = next((s for s in transcode.UNCOMPRESSED if s in accepted), None)
        if target is None or not transcode.can_convert(item.transfer_syntax):
            raise ValueError(f"{item.sop_uid}: the peer accepted none of "
                             f"{item.transfer_syntax} or an uncompressed syntax this object "
                             f"can be decoded to, for SOP class {item.sop_class_uid}")
        try:
            with blobs.open(item.blob_key) as source:
                copy = transcode.uncompressed_copy(source, target, blobs.scratch)
        except (transcode.CannotConvert, CoreError) as exc:  # CoreError: beyond the limits
            log.warning("%s: %s", item.sop_uid, exc)
            raise ValueError(str(exc)) from None
        try:
            return original(copy, *args, **kwargs)
        finally:
            with contextlib.suppress(OSError):
                copy.unlink()

    assoc.send_c_store = send_c_store


def _bound_send_queue(dul: Any) -> None:
    """Backpressure on what the association writes: wait while ``SEND_QUEUE_PDUS`` P-DATA
    PDUs are queued, as long as the DUL thread that writes them runs.

    pynetdicom's DIMSE layer splits a message into PDUs and queues every one of them for the
    DUL thread (an unbounded ``queue.Queue``) without waiting for the socket: a data set sent
    from disk to a peer slower than the disk sat in memory whole (measured: an 864 MB decoded
    cine sent by C-GET raised the server's peak RSS by 525 MB)."""
    original = dul.send_pdu
    queued = dul.to_provider_queue

    def send_pdu(primitive: Any) -> None:
        if isinstance(primitive, P_DATA):
            while queued.qsize() >= SEND_QUEUE_PDUS and dul.is_alive():
                time.sleep(0.0005)
        original(primitive)

    dul.send_pdu = send_pdu


def prefer_requested_syntaxes(event: Any) -> None:
    """``EVT_REQUESTED``: on storage contexts where the requestor takes the SCP role (a C-GET
    requestor, which will receive), its own order of transfer syntaxes decides, not ours.

    The acceptor picks one syntax per context, pynetdicom by the acceptor's order, which puts
    uncompressed first: right for what we receive, but a C-GET requestor that proposes JPEG
    first (``getscu +xy``) would then get a decoded copy instead of the stored bytes. Only this
    association's copy of the supported contexts is reordered."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    receivers = {uid for uid, role in assoc.requestor.role_selection.items() if role.scp_role}
    if primitive is None or not receivers:
        return
    wanted: dict[str, list[str]] = {}
    for context in primitive.presentation_context_definition_list:
        if context.abstract_syntax in receivers:
            wanted.setdefault(context.abstract_syntax, list(context.transfer_syntax))
    for context in assoc.acceptor.supported_contexts:
        order = wanted.get(context.abstract_syntax)
        if order:
            ours = list(context.transfer_syntax)
            first = [syntax for syntax in order if syntax in ours]
            context._transfer_syntax = [*first, *(s for s in ours if s not in first)]
