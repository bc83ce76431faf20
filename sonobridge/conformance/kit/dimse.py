"""The DIMSE suite (PS3.4, PS3.7, PS3.8), with pynetdicom as the peer: C-ECHO, C-STORE of a
generated ultrasound cine, C-FIND in the Study Root model at each level, C-GET, C-MOVE to
the kit's own storage SCP when the SCP knows it (``--move-dest``), Modality Worklist C-FIND
(after an HL7 ORM^O01 order over MLLP when ``--mllp`` is given), and Storage Commitment
(N-ACTION, the N-EVENT-REPORT on the same association or a new one to the kit)."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    UltrasoundMultiFrameImageStorage,
    Verification,
)

from sonobridge.conformance.kit import hl7
from sonobridge.conformance.kit.data import Cine, make_cine
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Evidence,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

PS3 = "https://dicom.nema.org/medical/dicom/current/output/html"
TRANSFER = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known Storage Commitment instance
REPORT_WAIT = 10.0  # seconds to wait for a Storage Commitment report


def peer(ctx: Context) -> tuple[str, str, int]:
    given = ctx.options.dicom
    if not given:
        raise Skipped("no DIMSE peer: give --dicom AET@host:port")
    try:
        aet, _, address = given.partition("@")
        host, _, port = address.rpartition(":")
        return aet, host, int(port)
    except ValueError:
        raise Failed(f"--dicom must be AET@host:port, not {given!r}") from None


def _ae(check: Check) -> AE:
    ae = AE(ae_title=check.options.calling_aet)
    timeout = check.options.timeout
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


@contextmanager
def associate(check: Check, contexts: list[str], roles: list[Any] | None = None,
              handlers: list[Any] | None = None) -> Iterator[Association]:
    aet, host, port = peer(check.ctx)
    ae = _ae(check)
    for uid in contexts:
        ae.add_requested_context(uid, TRANSFER)
    started = time.monotonic()
    assoc = ae.associate(host, port, ae_title=aet, ext_neg=roles or [],
                         evt_handlers=handlers or [])
    what = f"A-ASSOCIATE {check.options.calling_aet} → {aet}@{host}:{port}"
    if not assoc.is_established:
        state = ("rejected" if assoc.is_rejected
                 else "aborted (refused, dropped or A-ABORT)" if assoc.is_aborted
                 else "not established (no answer or connection refused)")
        check.record(Evidence("dimse", f"{what}: {state}", status=state,
                              elapsed_ms=(time.monotonic() - started) * 1000))
        raise Failed(f"association {state}: {what}")
    accepted = [c.abstract_syntax for c in assoc.accepted_contexts]
    check.record(Evidence("dimse", f"{what}: accepted", response="accepted contexts: "
                          + ", ".join(str(a) for a in accepted),
                          elapsed_ms=(time.monotonic() - started) * 1000))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status(check: Check, what: str, status: Dataset | None) -> int:
    if status is None or "Status" not in status:
        check.record(Evidence("dimse", f"{what}: no response (timeout, abort or invalid)"))
        raise Failed(f"{what}: no response from the SCP (timeout, abort or invalid)")
    code = int(status.Status)
    check.record(Evidence("dimse", f"{what} → status 0x{code:04X}", status=f"0x{code:04X}",
                          response=str(status)))
    return code


def _cine(check: Check) -> Cine:
    cine: Cine = check.ctx.needs("dimse_cine", "needs the instance stored by dimse-store-01, "
                                               "which failed")
    return cine


def echo(check: Check) -> None:
    with associate(check, [Verification]) as assoc:
        code = _status(check, "C-ECHO", assoc.send_c_echo())
        check.expect(code == 0, f"C-ECHO status 0x{code:04X}, expected 0x0000")


def store(check: Check) -> None:
    cine = make_cine(f"SBKIT-{uuid.uuid4().hex[:12]}", seed=11)
    with associate(check, [UltrasoundMultiFrameImageStorage]) as assoc:
        ds = dcmread(io.BytesIO(cine.data))
        code = _status(check, f"C-STORE {cine.sop}", assoc.send_c_store(ds))
        check.expect(code == 0, f"C-STORE status 0x{code:04X}, expected 0x0000 (Success)")
    check.ctx.state["dimse_cine"] = cine


def _find(check: Check, query: Dataset) -> list[Dataset]:
    matches = []
    with associate(check, [StudyRootQueryRetrieveInformationModelFind]) as assoc:
        final = None
        for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind):
            if status is None or "Status" not in status:
                final = None
                break
            final = status
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                matches.append(identifier)
        code = _status(check, f"C-FIND {query.QueryRetrieveLevel}", final)
        check.expect(code == 0, f"C-FIND final status 0x{code:04X}, expected 0x0000")
    check.note(f"{len(matches)} match(es)")
    return matches


def find_study(check: Check) -> None:
    cine = _cine(check)
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = cine.study
    q.PatientID = ""
    q.StudyDate = ""
    q.AccessionNumber = ""
    found = _find(check, q)
    check.expect([m.StudyInstanceUID for m in found] == [cine.study],
                 "one match for the stored study's StudyInstanceUID")
    check.expect(found[0].get("PatientID") == cine.patient_id,
                 "the match returns the requested PatientID")


def find_by_patient(check: Check) -> None:
    cine = _cine(check)
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = cine.patient_id
    q.StudyInstanceUID = ""
    q.ModalitiesInStudy = ""
    found = _find(check, q)
    check.expect(cine.study in [m.StudyInstanceUID for m in found],
                 "a STUDY-level query by PatientID finds the study")


def find_series(check: Check) -> None:
    cine = _cine(check)
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = cine.study
    q.SeriesInstanceUID = ""
    q.Modality = ""
    found = _find(check, q)
    check.expect([(m.SeriesInstanceUID, m.get("Modality")) for m in found] ==
                 [(cine.series, "US")], "the study's one series, Modality US")


def find_image(check: Check) -> None:
    cine = _cine(check)
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID = cine.study
    q.SeriesInstanceUID = cine.series
    q.SOPInstanceUID = ""
    q.SOPClassUID = ""
    found = _find(check, q)
    check.expect([m.SOPInstanceUID for m in found] == [cine.sop],
                 "the series' one instance at IMAGE level")


def find_none(check: Check) -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = "1.2.3.4.5.6.7.8.9.424242"
    check.expect(_find(check, q) == [], "no match for an unknown study")


def _retrieve_query(cine: Cine) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = cine.study
    return q


def get(check: Check) -> None:
    cine = _cine(check)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    role = build_role(UltrasoundMultiFrameImageStorage, scp_role=True)
    with associate(check, [StudyRootQueryRetrieveInformationModelGet,
                           UltrasoundMultiFrameImageStorage], roles=[role],
                   handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        final = None
        for status, _identifier in assoc.send_c_get(
                _retrieve_query(cine), StudyRootQueryRetrieveInformationModelGet):
            final = status if status is not None and "Status" in status else None
            if final is None:
                break
        code = _status(check, "C-GET STUDY", final)
        check.expect(code == 0, f"C-GET final status 0x{code:04X}, expected 0x0000")
    check.expect(received == [cine.sop], f"the instance came back by C-STORE sub-operation; "
                                         f"received {received}")


def move(check: Check) -> None:
    cine = _cine(check)
    dest = check.options.move_dest
    if not dest:
        raise Skipped("C-MOVE needs a destination the SCP knows: give --move-dest AET "
                      "(and --move-port, the port the SCP sends to)")
    received: list[str] = []
    done = threading.Event()

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        done.set()
        return 0x0000

    scp = AE(ae_title=dest)
    scp.add_supported_context(UltrasoundMultiFrameImageStorage, TRANSFER)
    try:
        server = scp.start_server(("0.0.0.0", check.options.move_port), block=False,
                                  evt_handlers=[(evt.EVT_C_STORE, on_store)])
    except OSError as exc:
        raise Failed(f"the kit's storage SCP cannot listen on port "
                     f"{check.options.move_port}: {exc}") from None
    assert server is not None
    try:
        check.note(f"storage SCP {dest} listening on port {server.server_address[1]}")
        with associate(check, [StudyRootQueryRetrieveInformationModelMove]) as assoc:
            final = None
            for status, _identifier in assoc.send_c_move(
                    _retrieve_query(cine), dest, StudyRootQueryRetrieveInformationModelMove):
                final = status if status is not None and "Status" in status else None
                if final is None:
                    break
            code = _status(check, f"C-MOVE STUDY → {dest}", final)
            check.expect(code == 0, f"C-MOVE final status 0x{code:04X}, expected 0x0000")
        done.wait(2)
    finally:
        server.shutdown()
    check.expect(received == [cine.sop], f"the instance arrived at {dest}; received {received}")


def unknown_context(check: Check) -> None:
    with associate(check, [Verification, "1.2.826.0.1.3680043.8.498.424242.1"]) as assoc:
        rejected = [c.abstract_syntax for c in assoc.rejected_contexts]
        check.note(f"rejected contexts: {rejected}")
        check.expect("1.2.826.0.1.3680043.8.498.424242.1" in rejected,
                     "a presentation context for an unknown SOP class is rejected while "
                     "the association stands")
        code = _status(check, "C-ECHO", assoc.send_c_echo())
        check.expect(code == 0, "C-ECHO still works on the association")


# ------------------------------------------------------------------ Modality Worklist

WORKLIST_KEYS = ("AccessionNumber", "PatientID", "PatientName", "StudyInstanceUID",
                 "RequestedProcedureID", "RequestedProcedureDescription")
STEP_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
             "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID")


def _worklist_query(**keys: str) -> Dataset:
    q = Dataset()
    for keyword in WORKLIST_KEYS:
        setattr(q, keyword, keys.get(keyword, ""))
    step = Dataset()
    for keyword in STEP_KEYS:
        setattr(step, keyword, keys.get(keyword, ""))
    q.ScheduledProcedureStepSequence = [step]
    return q


def _worklist_find(check: Check, query: Dataset, what: str) -> list[Dataset]:
    items: list[Dataset] = []
    # Verification too: an SCP that accepts no context at all refuses the association, and
    # the test is to say that MWL is not offered, not that the association failed.
    with associate(check, [Verification, ModalityWorklistInformationFind]) as assoc:
        if not any(c.abstract_syntax == ModalityWorklistInformationFind
                   for c in assoc.accepted_contexts):
            raise Skipped("the SCP does not accept Modality Worklist Information Model - FIND "
                          "in the association")
        final = None
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status is None or "Status" not in status:
                final = None
                break
            final = status
            if status.Status in (0xFF00, 0xFF01):
                if identifier is None:
                    raise Failed("a pending response without an identifier (a worklist item)")
                items.append(identifier)
        code = _status(check, f"C-FIND MWL {what}", final)
        check.expect(code == 0, f"MWL C-FIND final status 0x{code:04X}, expected 0x0000")
    check.note(f"{len(items)} worklist item(s)")
    return items


def _well_formed(check: Check, item: Dataset) -> None:
    for keyword in WORKLIST_KEYS:
        check.expect(keyword in item, f"the item returns the requested key {keyword} "
                                      f"(zero length when unknown)")
    steps = item.get("ScheduledProcedureStepSequence")
    check.expect(steps is not None and len(steps) >= 1, "the item has a Scheduled Procedure "
                                                        "Step Sequence with an item")
    for keyword in STEP_KEYS:
        check.expect(keyword in steps[0], f"the scheduled step returns the requested key "
                                          f"{keyword}")


def worklist_query(check: Check) -> None:
    # Every key universal: the query every MWL SCP answers (the first 50 items are checked).
    items = _worklist_find(check, _worklist_query(), "all items")
    for item in items[:50]:
        _well_formed(check, item)
    if not items:
        check.note("no item scheduled: the answer (Success, no pending) is well-formed")


def _orm_o01(control: str, mrn: str, accession: str) -> str:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return "\r".join([
        f"MSH|^~\\&|SBKIT|KITHOSP|SONOBRIDGE|SONOBRIDGE|{now}||ORM^O01|{control}|P|2.3",
        f"PID|1||{mrn}^^^KITHOSP^MR||KIT^WORKLIST||19800101|F",
        "PV1|1|O",
        f"ORC|NW|{accession}|{accession}||SC",
        f"OBR|1|{accession}|{accession}|US-ABD^US ABDOMEN COMPLETE^L|||{now}",
    ]) + "\r"


def worklist_order(check: Check) -> None:
    if not check.options.mllp:
        raise Skipped("no order to look for: give --mllp host:port to send an ORM^O01 first "
                      "(dimse-mwl-02 checks the answer's form without it)")
    tag = uuid.uuid4().hex[:10].upper()
    accession, mrn, control = f"KA{tag}", f"KIT{tag}", f"K{tag}"
    message = _orm_o01(control, mrn, accession)
    answer = hl7.exchange(check, hl7.START + message.encode() + hl7.END)
    msa = (hl7.segments(check, answer).get("MSA") or ["", ""])
    check.expect(msa[1] in ("AA", "CA"), f"the order is accepted (MSA-1 AA); got {msa[1]}")
    items: list[Dataset] = []
    deadline = time.monotonic() + 5  # an interface may file the order just after its ACK
    while True:
        items = _worklist_find(check, _worklist_query(AccessionNumber=accession),
                               f"AccessionNumber {accession}")
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check.expect([str(i.AccessionNumber) for i in items] == [accession],
                 f"one worklist item with the order's accession number {accession}; got "
                 f"{[str(i.get('AccessionNumber')) for i in items]}")
    _well_formed(check, items[0])
    check.expect(str(items[0].PatientID) == mrn, f"the item's PatientID is the order's MRN "
                                                 f"{mrn}; got {items[0].PatientID}")


# ------------------------------------------------------------------ Storage Commitment

def commitment(check: Check) -> None:
    cine = _cine(check)
    reports: list[tuple[str, int, Dataset]] = []
    arrived = threading.Event()

    def on_report(how: str) -> Callable[[Any], tuple[int, None]]:
        def handle(event: Any) -> tuple[int, None]:
            reports.append((how, int(event.event_type), event.event_information))
            arrived.set()
            return 0x0000, None
        return handle

    server = None
    if check.options.move_dest or check.options.move_port:
        # A report on a new association comes to the kit's address the SCP knows (the one
        # C-MOVE uses); listen there while the request is out.
        scp = AE(ae_title=check.options.calling_aet)
        scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        try:
            server = scp.start_server(
                ("0.0.0.0", check.options.move_port), block=False,
                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report("new association"))])
        except OSError as exc:
            check.note(f"cannot listen on port {check.options.move_port} for a report on a new "
                       f"association: {exc}")
    request = Dataset()
    request.TransactionUID = generate_uid()
    ref = Dataset()
    ref.ReferencedSOPClassUID = UltrasoundMultiFrameImageStorage
    ref.ReferencedSOPInstanceUID = cine.sop
    request.ReferencedSOPSequence = [ref]
    try:
        with associate(check, [Verification, StorageCommitmentPushModel],
                       handlers=[(evt.EVT_N_EVENT_REPORT, on_report("same association"))]
                       ) as assoc:
            if not any(c.abstract_syntax == StorageCommitmentPushModel
                       for c in assoc.accepted_contexts):
                raise Skipped("the SCP does not accept Storage Commitment Push Model in the "
                              "association (not offered)")
            status, _reply = assoc.send_n_action(request, 1, StorageCommitmentPushModel,
                                                 COMMITMENT_INSTANCE)
            code = _status(check, f"N-ACTION commit {request.TransactionUID}", status)
            check.expect(code == 0, f"N-ACTION status 0x{code:04X}, expected 0x0000")
            arrived.wait(REPORT_WAIT if server is None else 3)
        if not arrived.is_set() and server is not None:
            arrived.wait(REPORT_WAIT)
    finally:
        if server is not None:
            server.shutdown()
    if not reports:
        raise Failed(f"no N-EVENT-REPORT within {REPORT_WAIT:.0f} s on the same association"
                     + ("" if server is not None else
                        " (give --move-dest/--move-port to receive one on a new association)"))
    how, event_type, info = reports[0]
    check.record(Evidence("dimse", f"N-EVENT-REPORT event {event_type} on the {how}",
                          response=str(info)))
    check.expect(info is not None and info.get("TransactionUID") == request.TransactionUID,
                 "the report names the request's TransactionUID")
    check.expect(event_type == 1, f"event type 1 (all committed); got {event_type}")
    committed = [str(r.ReferencedSOPInstanceUID)
                 for r in info.get("ReferencedSOPSequence", [])]
    check.expect(committed == [cine.sop], f"the stored instance is committed; got {committed}")
    check.expect(not info.get("FailedSOPSequence"), "no failed instance")


def _t(id_: str, title: str, text: str, url: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("dimse-echo-01", "C-ECHO", "The Verification SOP Class SCP answers C-ECHO with Success.",
       f"{PS3}/part04.html#chapter_A", echo),
    _t("dimse-assoc-02", "Unknown SOP class context", "An unsupported abstract syntax is "
       "rejected per presentation context; the association is still accepted.",
       f"{PS3}/part08.html#sect_9.3.3.2", unknown_context),
    _t("dimse-store-01", "C-STORE an ultrasound cine", "The Storage SCP stores an Ultrasound "
       "Multi-frame Image and answers Success.", f"{PS3}/part04.html#sect_B.2.3", store),
    _t("dimse-find-01", "C-FIND STUDY by StudyInstanceUID", "Study Root C-FIND matches on the "
       "unique key and returns the requested attributes.",
       f"{PS3}/part04.html#sect_C.4.1", find_study),
    _t("dimse-find-02", "C-FIND STUDY by PatientID", "Study Root C-FIND matches on PatientID.",
       f"{PS3}/part04.html#sect_C.2.2.2", find_by_patient),
    _t("dimse-find-03", "C-FIND SERIES", "Hierarchical query at SERIES level within a study.",
       f"{PS3}/part04.html#sect_C.4.1.2", find_series),
    _t("dimse-find-04", "C-FIND IMAGE", "Hierarchical query at IMAGE level within a series.",
       f"{PS3}/part04.html#sect_C.4.1.2", find_image),
    _t("dimse-find-05", "C-FIND no match", "A query with no match ends with Success and no "
       "pending responses.", f"{PS3}/part04.html#sect_C.4.1.1.4", find_none),
    _t("dimse-get-01", "C-GET a study", "Study Root C-GET returns the study's instances by "
       "C-STORE sub-operations on the same association.",
       f"{PS3}/part04.html#sect_C.4.3", get),
    _t("dimse-move-01", "C-MOVE a study", "Study Root C-MOVE sends the study's instances to the "
       "named destination AE.", f"{PS3}/part04.html#sect_C.4.2", move),
    _t("dimse-mwl-01", "An HL7 order reaches the worklist", "After an ORM^O01 new order over "
       "MLLP, MWL C-FIND by AccessionNumber answers its item with the order's accession "
       "number and patient.", f"{PS3}/part04.html#sect_K.6.1.2", worklist_order),
    _t("dimse-mwl-02", "Modality Worklist query", "MWL C-FIND returns each item with the "
       "requested keys, the Scheduled Procedure Step Sequence among them, and ends with "
       "Success.", f"{PS3}/part04.html#sect_K.6.1", worklist_query),
    _t("dimse-commit-01", "Storage Commitment", "N-ACTION Request Storage Commitment of a "
       "stored instance is answered Success and followed by an N-EVENT-REPORT (event 1) that "
       "commits it, on the same association or a new one.",
       f"{PS3}/part04.html#sect_J.3", commitment),
]


def groups(ctx: Context) -> Iterable[Group]:
    peer(ctx)
    return [Group("dimse", "DIMSE services", TESTS)]


SUITE = Suite("dimse", "DICOM DIMSE (PS3.4/PS3.7)", groups)
