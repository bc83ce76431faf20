"""Storage Commitment Push Model (PS3.4 J): a modality asks whether we hold what it sent before
it deletes its own copy.

N-ACTION (action type 1) names SOP instances and a Transaction UID; the answer is an
N-EVENT-REPORT (event type 1: all committed, 2: some failed) listing each instance as held or
failed (0x0112 no such object instance, 0x0119 class mismatch).

A modality that deletes images on the strength of our answer must get one, so the request is
stored before the N-ACTION succeeds (``accept``) and stays queued until a report is delivered:

1. on the requester's own association, once the N-ACTION response has gone out: the
   ``EVT_DIMSE_SENT`` notification of that response starts the delivery (the report is made
   while the modality waits for the response, so it goes out at once), and it is written
   only once the association's reactor is idle again, so it follows the response;
2. else (the requester released, or refused the report) on a new association to the
   requester, a known peer, proposing the SCP role for ourselves (SCP/SCU role selection);
3. failing that, again with backoff (5 s doubling to an hour), by the sender's rounds, which
   also pick up requests a stopped process left behind; a request that no try has answered
   for a day is failed (``sonobridge dicom status`` lists it).

Many modalities release right after the N-ACTION response and ignore a report that crosses
their release. pynetdicom's ``send_n_event_report`` keeps the reactor paused until the answer
comes, so that release would go unanswered until one side timed out and aborted. The report
on the same association is therefore written with the reactor paused only for the writing
(``_write_request``), and its answer taken from ``EVT_DIMSE_RECV``: a release meanwhile is
answered as usual, and the report goes on a new association.

Each delivery owns its row (inserted as ``sending`` with a lease, or claimed by a conditional
update), so two processes on one database never send the same report twice at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import orjson
from prometheus_client import Counter
from pydicom.dataset import Dataset

from sonobridge.core.services import Core
from sonobridge.hie.dimse import sockets
from sonobridge.periodic import Periodic
from sonobridge.store import queues
from sonobridge.store.timeutil import now_us

log = logging.getLogger("sonobridge.dimse.commitment")

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance
NO_SUCH_INSTANCE = 0x0112
CLASS_MISMATCH = 0x0119
ANSWER_TIMEOUT = 30  # seconds the requester's own association has to answer the report
GIVE_UP_AFTER = 24 * 3600  # seconds after the request: no more tries, the request is failed
REPORTS = Counter("sonobridge_dimse_commitment_reports_total",
                  "Storage Commitment N-EVENT-REPORT deliveries, by outcome", ["outcome"])


def report(core: Core, items: list[tuple[str, str]], transaction_uid: str
           ) -> tuple[int, Dataset]:
    """(event type, event information) for the instances asked about, as held now."""
    held = {row.sop_uid: row.sop_class_uid for row in core.archive.retrieve_matches(
        sop_uids=[uid for _, uid in items] or [""])}
    info = Dataset()
    info.TransactionUID = transaction_uid
    committed, failed = [], []
    for sop_class, sop_uid in items:
        entry = Dataset()
        entry.ReferencedSOPClassUID = sop_class
        entry.ReferencedSOPInstanceUID = sop_uid
        if held.get(sop_uid) == sop_class:
            committed.append(entry)
        else:
            entry.FailureReason = NO_SUCH_INSTANCE if sop_uid not in held else CLASS_MISMATCH
            failed.append(entry)
    if committed:
        info.ReferencedSOPSequence = committed
    if failed:
        info.FailedSOPSequence = failed
    return (2 if failed else 1), info


@dataclass(frozen=True)
class Pending:
    """A stored request this process is delivering (what the queue's rows also carry)."""

    id: int
    transaction_uid: str
    requester: str
    items: bytes
    attempts: int = 0


def accept(core: Core, requester: str, request: Dataset) -> Pending:
    """Store an N-ACTION's request before it is answered, owned by this process's delivery
    for a lease's time."""
    items = orjson.dumps([[str(entry.get("ReferencedSOPClassUID", "")),
                           str(entry.get("ReferencedSOPInstanceUID", ""))]
                          for entry in request.get("ReferencedSOPSequence", [])])
    now = now_us()
    row_id = queues.dicom_commitments(core.store.engine).add(
        transaction_uid=str(request.TransactionUID), requester=requester, items=items,
        status="sending", attempts=0, next_attempt=now + queues.LEASE * 1_000_000,
        created=now, updated=now)
    return Pending(row_id, str(request.TransactionUID), requester, items)


class CommitmentSender(Periodic):
    """Delivers the reports: right after each N-ACTION response, and in rounds for retries."""

    name = "storage-commitment"

    def __init__(self, core: Core, aet: str, peers: dict[str, Any], interval: float = 1.0
                 ) -> None:
        super().__init__(interval)
        self.core = core
        self.queue = queues.dicom_commitments(core.store.engine)
        self.aet = aet
        self.peers = peers
        self._message_ids = itertools.count()

    def round(self) -> object:
        return self.deliver_due()

    # ---------------------------------------------------------------- the same association

    def after_response(self, assoc: Any, pending: Pending, message_id: int) -> None:
        """Deliver on ``assoc`` once our response to N-ACTION ``message_id`` is sent (called
        from the N-ACTION handler, which has just stored the request)."""
        from pynetdicom import evt
        from pynetdicom.dimse_messages import N_ACTION_RSP

        event_type, info = self._report(pending)
        started = threading.Event()

        def on_sent(event: Any) -> None:
            message = event.message
            if started.is_set() or not isinstance(message, N_ACTION_RSP) or \
                    message.command_set.MessageIDBeingRespondedTo != message_id:
                return
            started.set()
            assoc.unbind(evt.EVT_DIMSE_SENT, on_sent)  # one report per N-ACTION
            # Not from this (the association's reactor) thread: a send_* here would wait for
            # the reactor to pause, that is for itself.
            threading.Thread(target=self._deliver_now, args=(assoc, pending, event_type, info),
                             name="storage-commitment-report", daemon=True).start()

        assoc.bind(evt.EVT_DIMSE_SENT, on_sent)

    def _deliver_now(self, assoc: Any, pending: Pending, event_type: int, info: Dataset
                     ) -> None:
        try:
            if self._send_on(assoc, event_type, info, pending):
                self._done(pending, "same-association")
                return
            self._deliver_new(pending, event_type, info)
        except Exception:
            log.exception("storage commitment %s: delivery failed; it stays queued",
                          pending.transaction_uid)

    def _send_on(self, assoc: Any, event_type: int, info: Dataset, row: Any) -> bool:
        """The report on the requester's association: whether it answered success."""
        from pynetdicom import evt

        context = next((c for c in assoc.accepted_contexts
                        if c.abstract_syntax == STORAGE_COMMITMENT), None)
        if context is None or not assoc.is_established:
            return False
        message_id = next(self._message_ids) % 65535 + 1
        answered = threading.Event()
        answer: dict[str, int] = {}

        def on_received(event: Any) -> None:
            command = event.message.command_set
            if command.get("CommandField") == N_EVENT_REPORT_RSP and \
                    command.get("MessageIDBeingRespondedTo") == message_id:
                answer["status"] = int(command.Status)
                answered.set()

        def on_closed(event: Any) -> None:
            answered.set()

        handlers = [(evt.EVT_DIMSE_RECV, on_received), (evt.EVT_RELEASED, on_closed),
                    (evt.EVT_ABORTED, on_closed)]
        for event, handler in handlers:
            assoc.bind(event, handler)
        try:
            if not _write_request(assoc, _event_report(info, event_type, message_id, context),
                                  context.context_id):
                return False
            answered.wait(ANSWER_TIMEOUT)
        finally:  # a long association must not run every report's handlers for good
            for event, handler in handlers:
                assoc.unbind(event, handler)
        code = answer.get("status")
        log.info("storage commitment %s: event %d on the same association (%s)",
                 row.transaction_uid, event_type, "no answer" if code is None else
                 f"0x{code:04X}")
        return code == 0x0000

    # -------------------------------------------------------------------- new associations

    def deliver_due(self) -> int:
        """One round: every report due (retries, and deliveries a stopped process left)."""
        due = self.queue.due_ids(now_us(), 100)
        for row_id in due:
            if self.stopping:
                break
            row = self._claim(row_id)
            if row is not None:
                event_type, info = self._report(row)
                self._deliver_new(row, event_type, info)
        return len(due)

    def _deliver_new(self, row: Any, event_type: int, info: Dataset) -> None:
        peer = self.peers.get(row.requester)
        if peer is None:
            self._retry(row, f"{row.requester} closed the association and is not a known "
                        "peer (SONOBRIDGE_DICOM_PEERS)")
            return
        from pynetdicom import AE
        from pynetdicom.presentation import build_role

        ae = AE(ae_title=self.aet)
        ae.connection_timeout = 10
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_requested_context(STORAGE_COMMITMENT)
        back = ae.associate(peer.host, peer.port, ae_title=peer.aet,
                            ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
                            evt_handlers=sockets.REQUESTOR_HANDLERS)
        if not back.is_established:
            self._retry(row, f"no association with {peer.aet}@{peer.host}:{peer.port}")
            return
        try:
            status, _ = back.send_n_event_report(info, event_type, STORAGE_COMMITMENT,
                                                 STORAGE_COMMITMENT_INSTANCE)
        except (RuntimeError, ValueError) as exc:
            back.abort()
            self._retry(row, f"{peer.aet}: {exc}")
            return
        if back.is_established:
            back.release()
        code = status.get("Status")
        if code == 0x0000:
            log.info("storage commitment %s: event %d on a new association to %s",
                     row.transaction_uid, event_type, peer.aet)
            self._done(row, "new-association")
        else:
            self._retry(row, f"{peer.aet} answered the report with "
                        f"{'nothing' if code is None else f'0x{code:04X}'}")

    # ------------------------------------------------------------------------- the queue

    def _report(self, row: Any) -> tuple[int, Dataset]:
        items = [(str(c), str(i)) for c, i in orjson.loads(row.items)]
        return report(self.core, items, row.transaction_uid)

    def _claim(self, row_id: int) -> Any | None:
        """Take a due row for one delivery, unless another delivery has it."""
        return self.queue.claim_one(row_id, now_us())

    def _done(self, row: Any, outcome: str) -> None:
        REPORTS.labels(outcome).inc()
        self.queue.set([row.id], status="sent", attempts=row.attempts + 1, error=None,
                       updated=now_us())

    def _retry(self, row: Any, reason: str) -> None:
        """Try again later; after ``GIVE_UP_AFTER`` the request is failed instead (a
        modality has long stopped waiting; it keeps its copies and may ask again)."""
        attempts = row.attempts + 1
        delay = queues.retry_delay(attempts)
        now = now_us()
        values: dict[str, Any]
        if now - self.queue.value(row.id, "created") > GIVE_UP_AFTER * 1_000_000:
            values = {"status": "failed",
                      "error": f"no report delivered in {GIVE_UP_AFTER // 3600} h; "
                               f"last: {reason}"[:1024]}
        else:
            values = {"status": "retry", "error": reason[:1024],
                      "next_attempt": now + delay * 1_000_000}
        self.queue.set([row.id], attempts=attempts, updated=now, **values)
        REPORTS.labels(values["status"]).inc()
        log.warning("storage commitment %s for %s: %s; %s", row.transaction_uid,
                    row.requester, reason, "given up" if values["status"] == "failed" else
                    f"next try in {delay} s")


N_EVENT_REPORT_RSP = 0x8100  # Command Field


def _event_report(info: Dataset, event_type: int, message_id: int, context: Any) -> Any:
    from pynetdicom.dimse_primitives import N_EVENT_REPORT
    from pynetdicom.dsutils import encode

    syntax = context.transfer_syntax[0]
    request = N_EVENT_REPORT()
    request.MessageID = message_id
    request.AffectedSOPClassUID = STORAGE_COMMITMENT
    request.AffectedSOPInstanceUID = STORAGE_COMMITMENT_INSTANCE
    request.EventTypeID = event_type
    encoded = encode(info, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    # ``encode`` gives None for a data set it cannot encode: then an empty one, which is
    # what ``BytesIO(None)`` holds.
    request.EventInformation = BytesIO(encoded or b"")
    return request


def _write_request(assoc: Any, request: Any, context_id: int) -> bool:
    """Write a request on an association we accepted, without waiting for its answer.

    pynetdicom's own ``send_*`` pause the association's reactor (the thread serving the
    requester) through ``_reactor_checkpoint`` and wait for ``_is_paused``, so that nothing
    else is written meanwhile, and keep it paused until the answer comes. The same pause is
    taken here for the writing only. Written against pynetdicom 2.1-3.0.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return False  # another pynetdicom: the report goes on a new association
    checkpoint.clear()
    try:
        while not assoc._is_paused:
            if not assoc.is_established:
                return False
            time.sleep(0.0001)
        if not assoc.is_established or assoc.acse.is_release_requested():
            return False
        assoc.dimse.send_msg(request, context_id)
        return True
    finally:
        checkpoint.set()


class _AnswerNotUnexpected(logging.Filter):
    """The reactor logs the answer to a report written by ``_write_request`` as unexpected;
    it is expected (``EVT_DIMSE_RECV`` takes it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Received unexpected N-EVENT-REPORT service message"


logging.getLogger("pynetdicom.association").addFilter(_AnswerNotUnexpected())
