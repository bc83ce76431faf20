"""The DIMSE listener (pynetdicom): C-ECHO, C-STORE through the one ingest path, C-FIND from
the QIDO index, C-MOVE/C-GET in the stored transfer syntax, Modality Worklist from open
ServiceRequests. Handlers translate DIMSE to core calls and back; nothing else lives here.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom._globals import DEFAULT_TRANSFER_SYNTAXES
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import AllStoragePresentationContexts

# The SOP classes are made at import time (into the module's globals), which pynetdicom's
# annotations cannot show.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
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

from sonobridge.core.access import may_use
from sonobridge.core.errors import CoreError
from sonobridge.core.events import Answered
from sonobridge.core.imaging.ingest import ELEMENTS_DISCARDED
from sonobridge.core.policy import Caller
from sonobridge.core.services import Core
from sonobridge.hie.dimse import commitment, refusals, retrieve, sockets, worklist
from sonobridge.hie.dimse import find as finder
from sonobridge.hie.dimse.peers import Callers, load_peers
from sonobridge.hie.dimse.pending import write_pending_directly
from sonobridge.mappings.mpps import procedure_step

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
# PS3.7 C: the calling AE title was not given this service (SONOBRIDGE_DICOM_PEERS rights).
NOT_AUTHORIZED = 0x0124
# MPPS refusals by the core's error code (PS3.4 F.7: duplicate, no such instance, invalid
# value; anything else a processing failure).
MPPS_STATUS = {"duplicate": 0x0111, "not-found": 0x0112, "value": 0x0106}


# What the listener serves, as data that the DICOM conformance statement reads too
# (``sonobridge conformance dicom``): a change here changes the statement.
MAX_ASSOCIATIONS = 32
TIMEOUTS = {"network": 60, "dimse": 120, "acse": 30}  # seconds
QUERY_RETRIEVE_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
    ModalityWorklistInformationFind, ModalityPerformedProcedureStep)


def supported_contexts() -> list[tuple[str, list[str], bool]]:
    """(SOP class UID, transfer syntaxes, SCP/SCU role selection accepted) of each
    presentation context the listener accepts."""
    served: list[tuple[str, list[str], bool]] = [
        (Verification, list(DEFAULT_TRANSFER_SYNTAXES), False)]
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # pynetdicom's contexts all name one
        # Both roles: a C-GET requestor proposes the SCP role for itself (SCP/SCU role
        # selection) so that the objects come back over its own association.
        served.append((context.abstract_syntax, STORE_SYNTAXES, True))
    served += [(sop_class, NATIVE, False) for sop_class in QUERY_RETRIEVE_CLASSES]
    # Storage Commitment: we also send N-EVENT-REPORTs on it, hence both roles.
    served.append((commitment.STORAGE_COMMITMENT, NATIVE, True))
    return served


def get_storage_contexts() -> list[tuple[str, list[str]]]:
    """The storage contexts the listener offers as SCU, for C-GET sends back over the same
    association (the first 100 storage classes, in the three most common syntaxes)."""
    contexts: list[tuple[str, list[str]]] = []
    for context in AllStoragePresentationContexts[:100]:
        assert context.abstract_syntax is not None  # pynetdicom's contexts all name one
        contexts.append((context.abstract_syntax, STORE_SYNTAXES[:3]))
    return contexts


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
    def __init__(self, core: Core) -> None:
        settings = core.settings
        self.core = core
        self.ingest = core.ingest
        self.peers = load_peers(settings)
        self.callers = Callers(settings, self.peers)
        self.aet = settings.dicom_aet
        self.host = settings.dicom_host
        self.port = settings.dicom_port
        self.tls_port = settings.dicom_tls_port
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None
        self.commitments = commitment.CommitmentSender(core, self.aet, self.peers)
        self._deferred: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        # Stream C-STORE data to disk and send stored files without decoding them: a 2 GB
        # cine must not need 2 GB of memory, and is sent in the syntax it is stored in.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.network_timeout = TIMEOUTS["network"]
        ae.dimse_timeout = TIMEOUTS["dimse"]
        ae.acse_timeout = TIMEOUTS["acse"]
        for sop_class, syntaxes, both_roles in supported_contexts():
            if both_roles:
                ae.add_supported_context(sop_class, syntaxes, scu_role=True, scp_role=True)
            else:
                ae.add_supported_context(sop_class, syntaxes)
        for sop_class, syntaxes in get_storage_contexts():
            ae.add_requested_context(sop_class, syntaxes)
        if settings.dicom_known_callers_only:
            ae.require_calling_aet = sorted(self.peers) or ["-"]
        self.ae = ae

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        refusals.install()
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, self._echo), (evt.EVT_C_STORE, self._store),
            (evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_GET, self._get), (evt.EVT_N_CREATE, self._n_create),
            (evt.EVT_N_SET, self._n_set), (evt.EVT_N_ACTION, self._n_action),
            (evt.EVT_RELEASED, self._closed), (evt.EVT_ACCEPTED, self._association),
            (evt.EVT_REJECTED, self._association),
            (evt.EVT_ABORTED, self._closed)]
        if self.port:
            server = self._serve(self.port, handlers, None)
            self.server = server
            self.port = server.server_address[1]
            log.info("DIMSE listener %s on %s:%d", self.aet, self.host, self.port)
        if self.tls_port:
            # The same AE on a second port with DICOM TLS (PS3.15 B.1); peers prove who they
            # are with a certificate from SONOBRIDGE_TLS_CA when one is configured.
            from sonobridge.tls import server_context

            context = server_context(self.core.settings, client_certificates=True)
            tls = self._serve(self.tls_port, handlers, context)
            self.tls_server = tls
            self.tls_port = tls.server_address[1]
            log.info("DIMSE TLS listener %s on %s:%d", self.aet, self.host, self.tls_port)
        self.commitments.start()

    def _serve(self, port: int, handlers: list[EventHandlerType],
               context: ssl.SSLContext | None) -> ThreadedAssociationServer:
        server = self.ae.start_server((self.host, port), block=False, evt_handlers=handlers,
                                      ssl_context=context)
        assert server is not None, "a server started without blocking is returned"
        # pynetdicom has no socket-option hook: the instance's method is wrapped (see
        # ``sockets.py``), which mypy refuses for any method.
        server.get_request = sockets.tuned_accept(server.get_request)  # type: ignore[method-assign]
        server.contexts = _SupportedContexts(server.contexts)
        server.bind(evt.EVT_REQUESTED, retrieve.prefer_requested_syntaxes)
        return server

    def stop(self) -> None:
        for server in (self.server, self.tls_server):
            if server is not None:
                server.shutdown()
        self.server = self.tls_server = None
        self.commitments.stop()

    # ------------------------------------------------------------------ handlers

    def _caller(self, event: Any) -> Caller:
        """The calling AE title with the rights it was given (``hie/dimse/peers.py``)."""
        requestor = event.assoc.requestor
        return self.core.caller(self.callers.policy(requestor.ae_title), requestor.address)

    def _allowed(self, event: Any, service: str, operation: str) -> Caller | None:
        """The caller when it may use ``service``; else ``None``, counted and audited."""
        caller = self._caller(event)
        if may_use(caller.policy, service):
            return caller
        calling = event.assoc.requestor.ae_title
        log.info("%s from %s refused: this AE title may not use %s (SONOBRIDGE_DICOM_PEERS "
                 "rights)", operation, calling, service)
        OPERATIONS.labels(operation, f"{NOT_AUTHORIZED:04X}").inc()
        kind = {"find": "dicom-query", "worklist": "dicom-query", "store": "dicom-store"
                }.get(service, "dicom-access")
        self.core.events.emit(Answered(
            caller, kind, "E" if kind == "dicom-query" else "R", operation, outcome="4",
            detail=f"{calling} may not use {service}: refused with status "
                   f"0x{NOT_AUTHORIZED:04X} (not authorized)"))
        return None

    def _echo(self, event: Any) -> int:
        if self._allowed(event, "echo", "C-ECHO") is None:
            return NOT_AUTHORIZED
        OPERATIONS.labels("C-ECHO", "0000").inc()
        return 0x0000

    def _store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        path = event.dataset_path
        caller = self._allowed(event, "store", "C-STORE")
        if caller is None:
            with contextlib.suppress(OSError):
                path.unlink()
            return NOT_AUTHORIZED
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
        outcome = self.ingest.ingest(received, caller, source=f"C-STORE {calling}",
                                     deferred=deferred)
        if outcome.ok:  # stored; a warning status when something was left out (PS3.4 GG.4-1)
            status = ELEMENTS_DISCARDED if outcome.warnings else 0x0000
        else:
            status = outcome.failure or PROCESSING_FAILURE
        OPERATIONS.labels("C-STORE", f"{status:04X}").inc()
        return status

    def _association(self, event: Any) -> None:
        """Every association, accepted or refused, counted and in the audit trail. An
        accepted one learns how to refuse a C-MOVE or C-GET its caller may not make
        (``refusals.py``)."""
        accepted = event.event.name == "EVT_ACCEPTED"
        ASSOCIATIONS.labels("accepted" if accepted else "rejected").inc()
        if accepted:
            def refusal(service: str, operation: str) -> int | None:
                return None if self._allowed(event, service, operation) else NOT_AUTHORIZED

            event.assoc.sonobridge_refusal = refusal
        calling = event.assoc.requestor.ae_title
        self.core.events.emit(Answered(
            self._caller(event), "dicom-association", "E",
            "accepted" if accepted else "rejected", outcome="0" if accepted else "4",
            detail=f"{calling} -> {self.aet}: association "
                   f"{'accepted' if accepted else 'refused'}"))

    def _closed(self, event: Any) -> None:
        """At the end of an association: rebuild each touched ImagingStudy once, audit."""
        if event.event.name == "EVT_ABORTED":
            ASSOCIATIONS.labels("aborted").inc()
        with self._lock:
            studies = self._deferred.pop(id(event.assoc), set())
        if not studies:
            return
        caller = self._caller(event)
        for study in sorted(studies):
            self.core.events.emit(Answered(caller, "dicom-store", "C", "C-STORE", study=study))
        try:
            self.ingest.sync_studies(studies, caller)
        except Exception:  # the index is committed; `sonobridge reindex` rebuilds these
            log.exception("could not rebuild ImagingStudy for %s", sorted(studies))

    def _mpps(self, event: Any, operation: str, work: Any) -> tuple[int, Dataset | None]:
        caller = self._allowed(event, "mpps", operation)
        if caller is None:
            return NOT_AUTHORIZED, None
        try:
            work(caller)
        except CoreError as exc:
            status = MPPS_STATUS.get(exc.code, PROCESSING_FAILURE)
            log.info("MPPS %s refused: %s", operation, exc)
            OPERATIONS.labels(operation, f"{status:04X}").inc()
            return status, None
        OPERATIONS.labels(operation, "0000").inc()
        return 0x0000, None

    def _n_create(self, event: Any) -> tuple[int, Dataset | None]:
        if event.request.AffectedSOPClassUID != ModalityPerformedProcedureStep:
            return 0x0112, None
        uid = str(event.request.AffectedSOPInstanceUID)
        attributes = event.attribute_list
        calling = event.assoc.requestor.ae_title
        step = procedure_step(uid, attributes, self.core.settings.hl7_time_zone)
        status, _ = self._mpps(event, "N-CREATE", lambda caller: self.core.orders.step_started(
            caller, step, calling))
        return status, attributes if status == 0 else None

    def _n_set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        modifications = event.modification_list
        step = procedure_step(uid, modifications, self.core.settings.hl7_time_zone)
        status, _ = self._mpps(event, "N-SET", lambda caller: self.core.orders.step_changed(
            caller, step))
        return status, modifications if status == 0 else None

    def _n_action(self, event: Any) -> tuple[int, Dataset | None]:
        """Storage Commitment request: stored, then answered by an N-EVENT-REPORT."""
        if event.request.RequestedSOPClassUID != commitment.STORAGE_COMMITMENT or \
                event.action_type != 1:
            return 0x0123, None  # no such action type
        if self._allowed(event, "commit", "N-ACTION") is None:
            return NOT_AUTHORIZED, None
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
        mwl = event.request.AffectedSOPClassUID == ModalityWorklistInformationFind
        caller = self._allowed(event, "worklist" if mwl else "find", "C-FIND")
        if caller is None:
            yield NOT_AUTHORIZED, None
            return
        self.core.events.emit(Answered(caller, "dicom-query", "E", "C-FIND",
                                       query=str(identifier)[:2000]))
        write_pending_directly(event.assoc)
        try:
            if mwl:
                query = worklist.parse(identifier)
                results, pending, unsupported = (worklist.worklist(self.core, caller, query),
                                                 query.status, query.unsupported)
            else:
                search = finder.find(self.core.archive, identifier, self.aet,
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

    def _move(self, event: Any) -> Iterator[Any]:
        caller = self._allowed(event, "move", "C-MOVE")
        if caller is None:
            yield None, None  # pynetdicom: no destination; the status is set below
            return
        destination = self.peers.get(event.move_destination)
        if destination is None:
            log.info("C-MOVE to unknown destination %r", event.move_destination)
            OPERATIONS.labels("C-MOVE", "A801").inc()
            yield None, None
            return
        instances = retrieve.matching(self.core.archive, event.identifier)
        blobs = self.core.blobs
        # The association to the destination is made by pynetdicom after the next yield; it
        # learns to send stored files as it is accepted, before any C-STORE on it.
        yield destination.host, destination.port, {
            "contexts": retrieve.move_contexts(instances) or None,
            "evt_handlers": [*sockets.REQUESTOR_HANDLERS, (evt.EVT_ACCEPTED, lambda accepted:
                             retrieve.send_stored_files(accepted.assoc, blobs))]}
        yield len(instances)
        yield from self._send(event, caller, instances, "C-MOVE")

    def _get(self, event: Any) -> Iterator[Any]:
        caller = self._allowed(event, "get", "C-GET")
        if caller is None:  # refused before (``refusals.py``): never reached
            yield 0
            return
        instances = retrieve.matching(self.core.archive, event.identifier)
        retrieve.send_stored_files(event.assoc, self.core.blobs)
        yield len(instances)
        yield from self._send(event, caller, instances, "C-GET")

    def _send(self, event: Any, caller: Caller, instances: list[retrieve.Stored],
              operation: str) -> Iterator[tuple[int, Any]]:
        for study in sorted({i.study_uid for i in instances})[:20]:
            self.core.events.emit(Answered(
                caller, "dicom-access", "R", operation, study=study,
                instances=tuple(i.sop_uid for i in instances if i.study_uid == study)))
        for item in instances:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            # The stored file, sent from the blob store by the association
            # (retrieve.send_stored_files).
            yield 0xFF00, retrieve.StoredObject(item)
        OPERATIONS.labels(operation, "0000").inc()
