"""The core's hook points: what happened, told to whoever listens.

Listeners are the audit trail (``core/audit.py``), the HL7 results outbox and DICOM forwarding
(``hie/``, attached by ``app/``), and later FHIR subscriptions. The core never calls them by
name: it says what happened, and an edge can listen without the core knowing it exists.

``ResourceWriting`` comes before a write, in its transaction: a listener may refuse it.

Two moments, told apart by whether the event carries the transaction's ``writer``:

- **in the transaction** (``ResourceChanged``, ``InstanceStored``, an ``Answered`` with a
  writer): a listener's rows (an AuditEvent, an outbox row, a forwarding row) are written on the
  same connection and commit or roll back with the change;
- **after** (``Answered`` without a writer: reads, searches, retrievals, refusals, logins):
  the listener should only queue (the audit trail writes those in batches from a thread).

Listeners run on the caller's thread, in the order they were added, and must be quick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sonobridge.core.policy import Caller
from sonobridge.store.resources import StoredResource, Writer

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class ResourceChanged:
    """A FHIR resource was created, updated or deleted (in the transaction)."""

    writer: Writer
    caller: Caller
    action: str  # C U D
    interaction: str  # create update patch delete
    stored: StoredResource
    resource: dict[str, Any] | None  # as written (None for a deletion)
    changed: bool = True  # False for an update that repeated the current content
    # False when the writer audits a batch of derived writes itself, as one AuditEvent
    # naming each resource (an SR's measurement Observations), instead of one per resource.
    audited: bool = True


@dataclass(frozen=True, slots=True)
class ResourceWriting:
    """A FHIR resource is about to be created or updated (in the transaction, before the
    row is written). A listener may refuse the write by raising ``CoreError``: profile
    validation (``meta.profile``) and the consultation workflow's transition rules listen
    here. ``previous`` is the current content (``None`` for a creation or a deleted one)."""

    writer: Writer
    caller: Caller
    interaction: str  # create update patch
    res_type: str
    res_id: str | None  # None for a create whose id the store has not given yet
    resource: dict[str, Any]
    previous: dict[str, Any] | None
    # Built by the server's own mapping, which keeps it to R4 and to the profiles it claims
    # (tests hold the mapping to that): the profile check skips it; the other listeners still
    # hear it. Never set for what a client sends.
    conformant: bool = False


@dataclass(frozen=True, slots=True)
class InstanceStored:
    """A DICOM instance entered the archive (in the transaction that indexes it)."""

    writer: Writer
    caller: Caller
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    source: str  # "C-STORE CART1", "STOW-RS", "import path", "C-GET PACS"
    # The instance's DICOM JSON as indexed, when the ingest has it in hand (a listener need not
    # read the row it just wrote back and parse it again); None: read the index row.
    metadata: dict[str, Any] | None = None
    # What a listener could not make of the object, for the sender to hear (STOW-RS Warning,
    # C-STORE warning status): listeners append; the object is stored all the same.
    warnings: list[str] = field(default_factory=list)
    # True when the archive held no instance of this SOP Instance UID before (not a
    # replacement, not a rebuild): a listener need not look for what it made of an earlier one.
    new: bool = False


@dataclass(frozen=True, slots=True)
class InstanceDeleted:
    """DICOM instances are being deleted: a study, a series (``series_uid``) or one instance
    (``sop_uid``). Told in the deleting transaction just before the index rows go, so a
    listener can still look up what the scope holds (the SRs whose Observations go too)."""

    writer: Writer
    caller: Caller
    study_uid: str
    series_uid: str | None
    sop_uid: str | None


@dataclass(frozen=True, slots=True)
class Answered:
    """A request was answered or refused: a read, a search, a retrieval, a stored study, a
    message, a login. With a ``writer`` it is told inside the transaction of the change it
    made (an applied HL7 message), else after.

    ``kind`` names the audit event type (``core/audit.py`` KINDS: rest, dicom-access,
    dicom-query, dicom-store, dicom-association, hl7-in, hl7-out, login, token…)."""

    caller: Caller
    kind: str
    action: str  # C R U D E
    subtype: str  # read, search-type, C-FIND, OMI_O23, login…
    outcome: str = "0"  # 0 success, 4 minor failure (refused), 8 serious failure
    resource: str | None = None  # Type/id (or a type, for a search)
    patient: str | None = None  # Patient/id
    study: str | None = None  # Study Instance UID
    query: str | None = None
    detail: str = ""
    writer: Writer | None = None
    instances: tuple[str, ...] = ()  # SOP Instance UIDs a DICOM retrieval touched


class Events:
    """Listeners by event type. ``emit`` calls each listener of the event's exact type."""

    def __init__(self) -> None:
        self._listeners: dict[type[Any], list[Callable[[Any], None]]] = {}

    def listen(self, kind: type[E], listener: Callable[[E], None]) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    def wants(self, kind: type[Any]) -> bool:
        """Whether anyone listens (so that an event nobody hears is not even built)."""
        return bool(self._listeners.get(kind))

    def emit(self, event: object) -> None:
        for listener in self._listeners.get(type(event), ()):
            listener(event)
