"""The IHE transactions of the FHIR side in the audit trail, with their IHE event types.

MHD, PDQm and PIXm are the FHIR server itself, so each of their requests is already audited
as the RESTful interaction it is (``fhir/routes.py``: event type ``rest``). The IHE audit
messages name the transaction instead (IHE BALP, ITI TF-2 §3.x.5 "Security Considerations"):
the DICOM event type on this side of it and the transaction code in ``urn:ihe:event-type-code``
(``core/audit.py`` KINDS and SUBTYPES). So, for the requests that are those transactions, one
more record is told, next to the RESTful one:

| request | event type | subtype |
| --- | --- | --- |
| ``GET DocumentReference?…`` | Query (DCM 110112) | ITI-67 |
| ``GET List?code=submissionset…`` (or ``folder``) | Query | ITI-66 |
| ``GET Binary/{id}`` (a document's ``attachment.url``) | Export (DCM 110106) | ITI-68 |
| ``GET Patient?…`` | Query | ITI-78 |
| ``Patient/$ihe-pix`` | Query | ITI-83 |
| ``Patient/$match`` | Query | ITI-119 |
| ``POST /fhir`` with a SubmissionSet ``List`` (ITI-65) | Import (DCM 110107) | ITI-65 |

ITI-65 is told by ``mhd.py`` once the submission is committed (or refused at commit). Only
when the audit trail is on: an ``Answered`` listener makes every edge build its events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sonobridge.core.events import Answered

if TYPE_CHECKING:
    from sonobridge.core.services import Core

# (RESTful interaction, resource type) -> (audit kind, action, IHE transaction)
_SEARCHES = {
    ("search-type", "DocumentReference"): ("query", "E", "ITI-67"),
    ("search-type", "Patient"): ("query", "E", "ITI-78"),
    ("read", "Binary"): ("export", "R", "ITI-68"),
    ("operation $ihe-pix", "Patient"): ("query", "E", "ITI-83"),
    ("operation $match", "Patient"): ("query", "E", "ITI-119"),
}
LIST_CODES = ("submissionset", "folder")


def transaction_of(event: Answered) -> tuple[str, str, str] | None:
    """(kind, action, transaction) when a RESTful event is one of the IHE transactions."""
    if event.kind != "rest":
        return None
    resource = event.resource or ""
    res_type = resource.partition("/")[0]
    if event.subtype == "search-type" and res_type == "List":
        query = event.query or ""
        return ("query", "E", "ITI-66") if any(c in query for c in LIST_CODES) else None
    return _SEARCHES.get((event.subtype, res_type))


def on_answered(core: Core, event: Answered) -> None:
    found = transaction_of(event)
    if found is None:
        return
    kind, action, transaction = found
    core.events.emit(Answered(event.caller, kind, action, transaction, outcome=event.outcome,
                              resource=event.resource, patient=event.patient,
                              query=event.query, detail=event.detail))


def attach(core: Core) -> None:
    if core.audit is not None:
        core.events.listen(Answered, lambda event: on_answered(core, event))
