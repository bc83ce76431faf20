"""The DIMSE listener (pynetdicom): C-ECHO, C-STORE through the one ingest path, C-FIND from
the QIDO index, C-MOVE/C-GET in the stored transfer syntax, Modality Worklist from open
ServiceRequests. Handlers translate DIMSE to core calls and back; nothing else lives here.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from sonobridge.core.imaging.ingest import DicomIngest
from sonobridge.core.orders import Mpps, MppsError
from sonobridge.hie.dimse import commitment, retrieve, sockets, worklist
from sonobridge.hie.dimse import find as finder
from sonobridge.hie.dimse.peers import load_peers
from sonobridge.hie.dimse.pending import write_pending_directly

log = logging.getLogger("sonobridge.dimse")

OPERATIONS = Counter("sonobridge_dimse_operations_total", "DIMSE operations answered",
                     ["operation", "status"])
# By outcome only: calling AE titles are for the audit trail (too many label values here).
ASSOCIATIONS = Counter("sonobridge_dimse_associations_total",
                       "DIMSE associations: accepted, rejected, aborted", ["outcome"])
for _outcome in ("accepted", "rejected", "aborted"):
    ASSOCIATIONS.labels(_outcome)  # at 0 from the start, so that rates work at once

# The transfer syntaxes objects are stored in as received (no transcoding on the way in).
# Explicit VR Big Endian (retired) is left out, so that senders keep little-endian data as is.
STORE_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106",
]
NATIVE = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
# Storage failure reasons from the ingest path are PS3.4 C-STORE statuses already.
PROCESSING_FAILURE = 0x0110


class _SupportedContexts(list):
    """The listener's presentation contexts, copied cheaply for each association.

    pynetdicom deep-copies the supported contexts for every association it accepts; with every
    storage class in 18 transfer syntaxes that re-creates and re-validates some 2,800 UIDs, 28
    ms before an association can even be answered (measured with ``echoscu``: 34 ms per echo).
    A context's one mutable part is its list of transfer syntaxes (UIDs are immutable
    strings), so copying each context and that list isolates associations just as well.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            clone = copy.copy(context)
            clone._transfer_syntax = list(context._transfer_syntax)
            copies.append(clone)
        return copies


class DimseServer:
    def __init__(self, core: Any) -> None:
        settings = core.settings
        self.core = core
        self.ingest = DicomIngest(core)
        self.mpps = Mpps(core)
        self.peers = load_peers(settings)
        self.aet = settings.dicom_aet
        self.host = settings.dicom_host
        self.port = settings.dicom_port
        self.server: ThreadedAssociationServer | None = None
        self.commitments = commitment.CommitmentSender(core, self.aet, self.peers)
        self._deferred: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        # Stream C-STORE data to disk and send stored files without decoding them: a 2 GB
        # cine must not need 2 GB of memory, and is sent in the syntax it is stored in.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = 32
        ae.network_timeout = 60
        ae.dimse_timeout = 120
        ae.acse_timeout = 30
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            # Both roles: a C-GET requestor proposes the SCP role for itself (SCP/SCU role
            # selection) so that the objects come back over its own association.
            ae.add_supported_context(context.abstract_syntax, STORE_SYNTAXES, scu_role=True,
                                     scp_role=True)
        for sop_class in (PatientRootQueryRetrieveInformationModelFind,
                          StudyRootQueryRetrieveInformationModelFind,
                          PatientRootQueryRetrieveInformationModelMove,
                          StudyRootQueryRetrieveInformationModelMove,
                          PatientRootQueryRetrieveInformationModelGet,
                          StudyRootQueryRetrieveInformationModelGet,
                          ModalityWorklistInformationFind, ModalityPerformedProcedureStep):
            ae.add_supported_context(sop_class, NATIVE)
        # Storage Commitment: we also send N-EVENT-REPORTs on it, hence both roles.
        ae.add_supported_context(commitment.STORAGE_COMMITMENT, NATIVE, scu_role=True,
                                 scp_role=True)
        # C-GET sends back over the same association: offer storage as SCU too.
        for context in AllStoragePresentationContexts[:100]:
            ae.add_requested_context(context.abstract_syntax, STORE_SYNTAXES[:3])
        if settings.dicom_known_callers_only:
            ae.require_calling_aet = sorted(self.peers) or ["-"]
        self.ae = ae

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        handlers = [(evt.EVT_C_ECHO, self._echo), (evt.EVT_C_STORE, self._store),
                    (evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move),
                    (evt.EVT_C_GET, self._get), (evt.EVT_N_CREATE, self._n_create),
                    (evt.EVT_N_SET, self._n_set), (evt.EVT_N_ACTION, self._n_action),
                    (evt.EVT_RELEASED, self._closed), (evt.EVT_ACCEPTED, self._association),
                    (evt.EVT_REJECTED, self._association),
                    (evt.EVT_ABORTED, self._closed)]
        self.server = self.ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=handlers)
        self.server.get_request = sockets.tuned_accept(self.server.get_request)
        self.server.contexts = _SupportedContexts(self.server.contexts)  # type: ignore[method-assign]
        self.server.bind(evt.EVT_REQUESTED, retrieve.prefer_requested_syntaxes)
        self.port = self.server.server_address[1]
        self.commitments.start()
        log.info("DIMSE listener %s on %s:%d", self.aet, self.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.commitments.stop()

    # ------------------------------------------------------------------ handlers

    def _echo(self, event: Any) -> int:
        OPERATIONS.labels("C-ECHO", "0000").inc()
        return 0x0000

    def _store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        path = event.dataset_path
        try:
            received = self.ingest.receiver.from_file(path)
        except Exception:
            log.exception("C-STORE from %s: could not receive the dataset", calling)
            OPERATIONS.labels("C-STORE", "A700").inc()
            return 0xA700
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        with self._lock:
            deferred = self._deferred.setdefault(id(event.assoc), set())
        outcome = self.ingest.ingest(received, source=f"C-STORE {calling}", deferred=deferred)
        status = 0x0000 if outcome.ok else (outcome.failure or PROCESSING_FAILURE)
        OPERATIONS.labels("C-STORE", f"{status:04X}").inc()
        return status

    def _association(self, event: Any) -> None:
        """Every association, accepted or refused, counted and in the audit trail."""
        accepted = event.event.name == "EVT_ACCEPTED"
        ASSOCIATIONS.labels("accepted" if accepted else "rejected").inc()
        if self.core.audit is None:
            return
        from sonobridge.core.audit import Record

        calling = event.assoc.requestor.ae_title
        self.core.audit.later(Record(
            "dicom-association", "E", "accepted" if accepted else "rejected",
            outcome="0" if accepted else "4", who=f"dicom:{calling}", client_id=calling,
            ip=event.assoc.requestor.address,
            detail=f"{calling} -> {self.aet}: association {'accepted' if accepted else 'refused'}"))

    def _closed(self, event: Any) -> None:
        """At the end of an association: rebuild each touched ImagingStudy once, audit."""
        if event.event.name == "EVT_ABORTED":
            ASSOCIATIONS.labels("aborted").inc()
        with self._lock:
            studies = self._deferred.pop(id(event.assoc), set())
        if not studies:
            return
        audit = self.core.audit
        if audit is not None:
            from sonobridge.core.audit import Record

            calling = event.assoc.requestor.ae_title
            for study in studies:
                audit.later(Record("dicom-store", "C", "C-STORE", who=f"dicom:{calling}",
                                   client_id=calling,
                                   ip=event.assoc.requestor.address, study=study))
        try:
            self.ingest.sync_studies(studies)
        except Exception:  # the index is committed; `sonobridge reindex` rebuilds these
            log.exception("could not rebuild ImagingStudy for %s", sorted(studies))

    def _n_create(self, event: Any) -> tuple[int, Dataset | None]:
        if event.request.AffectedSOPClassUID != ModalityPerformedProcedureStep:
            return 0x0112, None
        uid = event.request.AffectedSOPInstanceUID
        attributes = event.attribute_list
        try:
            self.mpps.create(str(uid), attributes, event.assoc.requestor.ae_title)
        except MppsError as exc:
            log.info("MPPS N-CREATE %s refused: %s", uid, exc)
            OPERATIONS.labels("N-CREATE", f"{exc.status:04X}").inc()
            return exc.status, None
        OPERATIONS.labels("N-CREATE", "0000").inc()
        return 0x0000, attributes

    def _n_set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = event.request.RequestedSOPInstanceUID
        modifications = event.modification_list
        try:
            self.mpps.set(str(uid), modifications, event.assoc.requestor.ae_title)
        except MppsError as exc:
            log.info("MPPS N-SET %s refused: %s", uid, exc)
            OPERATIONS.labels("N-SET", f"{exc.status:04X}").inc()
            return exc.status, None
        OPERATIONS.labels("N-SET", "0000").inc()
        return 0x0000, modifications

    def _n_action(self, event: Any) -> tuple[int, Dataset | None]:
        """Storage Commitment request: stored, then answered by an N-EVENT-REPORT."""
        if event.request.RequestedSOPClassUID != commitment.STORAGE_COMMITMENT or \
                event.action_type != 1:
            return 0x0123, None  # no such action type
        request = event.action_information
        if "TransactionUID" not in request:
            return 0x0120, None  # missing attribute
        try:
            pending = commitment.accept(self.core, event.assoc.requestor.ae_title, request)
            self.commitments.after_response(event.assoc, pending, event.request.MessageID)
        except Exception:
            log.exception("storage commitment request could not be stored")
            OPERATIONS.labels("N-ACTION", "0110").inc()
            return 0x0110, None  # processing failure: the modality keeps its copies
        OPERATIONS.labels("N-ACTION", "0000").inc()
        return 0x0000, None

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """Query/Retrieve and Modality Worklist C-FIND: pending FF01 instead of FF00 when a
        key was not matched on."""
        identifier = event.identifier
        self._audit_query(event, identifier)
        write_pending_directly(event.assoc)
        try:
            if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
                query = worklist.parse(identifier)
                results, pending, unsupported = (worklist.worklist(self.core, query),
                                                 query.status, query.unsupported)
            else:
                search = finder.find(self.core, identifier, self.aet,
                                     event.request.AffectedSOPClassUID, implicit_vr=bool(
                                         event.context.transfer_syntax.is_implicit_VR))
                results, pending, unsupported = search.results, search.status, \
                    search.unsupported
            if unsupported:
                log.info("C-FIND: not matched on: %s", "; ".join(unsupported))
            for ds in results:
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                yield pending, ds
        except finder.FindError as exc:
            log.info("C-FIND refused: %s", exc)
            OPERATIONS.labels("C-FIND", f"{exc.status:04X}").inc()
            yield exc.status, None
            return
        OPERATIONS.labels("C-FIND", "0000").inc()

    def _audit_query(self, event: Any, identifier: Dataset) -> None:
        if self.core.audit is None:
            return
        from sonobridge.core.audit import Record

        calling = event.assoc.requestor.ae_title
        self.core.audit.later(Record(
            "dicom-query", "E", "C-FIND", who=f"dicom:{calling}", client_id=calling,
            ip=event.assoc.requestor.address, query=str(identifier)[:2000]))

    def _move(self, event: Any) -> Iterator[Any]:
        destination = self.peers.get(event.move_destination)
        if destination is None:
            log.info("C-MOVE to unknown destination %r", event.move_destination)
            OPERATIONS.labels("C-MOVE", "A801").inc()
            yield None, None
            return
        instances = retrieve.matching(self.core, event.identifier)
        scratch = str(self.ingest.receiver.incoming)
        # The association to the destination is made by pynetdicom after the next yield; it
        # learns to send stored files as it is accepted, before any C-STORE on it.
        yield destination.host, destination.port, {
            "contexts": retrieve.move_contexts(instances) or None,
            "evt_handlers": [*sockets.REQUESTOR_HANDLERS, (evt.EVT_ACCEPTED, lambda accepted:
                             retrieve.send_stored_files(accepted.assoc, scratch))]}
        yield len(instances)
        yield from self._send(event, instances, "C-MOVE")

    def _get(self, event: Any) -> Iterator[Any]:
        instances = retrieve.matching(self.core, event.identifier)
        retrieve.send_stored_files(event.assoc, str(self.ingest.receiver.incoming))
        yield len(instances)
        yield from self._send(event, instances, "C-GET")

    def _send(self, event: Any, instances: list[retrieve.Stored], operation: str
              ) -> Iterator[tuple[int, Any]]:
        if self.core.audit is not None and instances:
            from sonobridge.core.audit import Record

            calling = event.assoc.requestor.ae_title
            for study in sorted({i.study_uid for i in instances})[:20]:
                self.core.audit.later(Record(
                    "dicom-access", "R", operation, who=f"dicom:{calling}", client_id=calling,
                    ip=event.assoc.requestor.address, study=study))
        for item in instances:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            # The stored file, sent from disk by the association (retrieve.send_stored_files).
            yield 0xFF00, retrieve.StoredObject(item)
        OPERATIONS.labels(operation, "0000").inc()
