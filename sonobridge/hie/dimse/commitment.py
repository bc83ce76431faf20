"""Storage Commitment Push Model (PS3.4 J): a modality asks whether we hold what it sent before
it deletes its own copy.

N-ACTION (action type 1) names SOP instances and a Transaction UID; the answer is an
N-EVENT-REPORT (event type 1: all committed, 2: some failed) listing each instance as held or
failed (0x0112, no such object instance). It is sent on the same association when the
requester keeps it open, else on a new association to the requester (a known peer).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select

from sonobridge.hie.dimse import sockets
from sonobridge.store.tables import dicom_instances as I

log = logging.getLogger("sonobridge.dimse.commitment")

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance
NO_SUCH_INSTANCE = 0x0112
CLASS_MISMATCH = 0x0119


def report(core: Any, request: Dataset) -> tuple[int, Dataset]:
    """(event type, event information) for an N-ACTION's action information."""
    wanted = [(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
              for item in request.get("ReferencedSOPSequence", [])]
    with core.store.reader.connect() as conn:
        held = {row.sop_uid: row.sop_class_uid for row in conn.execute(
            select(I.c.sop_uid, I.c.sop_class_uid).where(
                I.c.sop_uid.in_([uid for _, uid in wanted] or [""])))}
    info = Dataset()
    info.TransactionUID = request.TransactionUID
    committed, failed = [], []
    for sop_class, sop_uid in wanted:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        if held.get(sop_uid) == sop_class:
            committed.append(item)
        else:
            item.FailureReason = NO_SUCH_INSTANCE if sop_uid not in held else CLASS_MISMATCH
            failed.append(item)
    if committed:
        info.ReferencedSOPSequence = committed
    if failed:
        info.FailedSOPSequence = failed
    return (2 if failed else 1), info


def answer_later(core: Any, assoc: Any, request: Dataset, peers: dict[str, Any],
                 aet: str) -> None:
    """Send the N-EVENT-REPORT once the N-ACTION response has gone out."""

    def run() -> None:
        time.sleep(0.2)  # the N-ACTION-RSP is sent when the handler returns
        event_type, info = report(core, request)
        if assoc.is_established:
            status = assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT,
                                               STORAGE_COMMITMENT_INSTANCE)
            log.info("storage commitment %s: event %d on the same association (%s)",
                     request.TransactionUID, event_type, status.get("Status", "?"))
            return
        peer = peers.get(assoc.requestor.ae_title)
        if peer is None:
            log.warning("storage commitment %s: %s closed the association and is not a known "
                        "peer; the report cannot be delivered", request.TransactionUID,
                        assoc.requestor.ae_title)
            return
        from pynetdicom import AE
        from pynetdicom.presentation import build_role

        ae = AE(ae_title=aet)
        ae.add_requested_context(STORAGE_COMMITMENT)
        back = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                            ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
                            evt_handlers=sockets.REQUESTOR_HANDLERS)
        if back.is_established:
            back.send_n_event_report(info, event_type, STORAGE_COMMITMENT,
                                     STORAGE_COMMITMENT_INSTANCE)
            back.release()

    threading.Thread(target=run, name="storage-commitment", daemon=True).start()
