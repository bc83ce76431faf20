"""What the DICOM conformance statement is written from: plain data, gathered by the app layer
from the tables the DIMSE listener and the DICOMweb routes are built from (this edge may not
import those edges), so that the statement changes when what is served changes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Context:
    """Presentation contexts for one SOP class, as acceptor (SCP) or requestor (SCU)."""

    sop_class: str
    transfer_syntaxes: tuple[str, ...]
    role: str  # "SCP" or "SCU"
    group: str  # the activity it belongs to: "Verification", "Storage", ...
    role_selection: bool = False  # SCP/SCU role selection accepted (SCP) or proposed (SCU)


@dataclass(frozen=True)
class WebResource:
    """One DICOMweb (or WADO-URI) resource path and the methods it answers."""

    service: str  # QIDO-RS, WADO-RS, STOW-RS, WADO-URI, ...
    path: str
    methods: tuple[str, ...]


@dataclass(frozen=True)
class MediaOffer:
    """A media type (with a transfer syntax where one applies) a web service produces or
    accepts."""

    service: str  # e.g. "WADO-RS instances", "WADO-RS frames", "STOW-RS"
    media_type: str
    transfer_syntax: str = ""  # a UID, "*" (as stored), or "" (not applicable)
    note: str = ""


@dataclass(frozen=True)
class DicomFacts:
    product: str
    version: str
    ae_title: str
    host: str
    port: int
    implementation_class_uid: str
    implementation_version_name: str
    max_pdu_receive: int
    max_associations: int
    timeouts: dict[str, int]
    scp: tuple[Context, ...]
    scu: tuple[Context, ...]
    dimse_rights: tuple[tuple[str, str], ...]  # (right, what it allows)
    unlisted_rights: str
    known_callers_only: bool
    web_resources: tuple[WebResource, ...]
    media: tuple[MediaOffer, ...]
    character_sets_accepted: tuple[str, ...]
    character_set_answered: str
    settings: tuple[tuple[str, str, str], ...]  # (setting, default, meaning)
    extra: dict[str, str] = field(default_factory=dict)

    def scp_pairs(self) -> set[tuple[str, str]]:
        """Every (SOP class, transfer syntax) the listener accepts, as listed."""
        return {(c.sop_class, ts) for c in self.scp for ts in c.transfer_syntaxes}
