"""The policy of one caller: who is calling, with which rights, in which patient's context.

Every edge turns its caller into a ``Policy``: the authorization server from an access token
(``auth/``), the DIMSE listener from the calling AE title and the rights configured for it, the
MLLP listener from the sending application. ``core/access.py`` answers every question asked of
it, for every protocol (FHIR interactions, searches and their includes, history, $everything,
DICOM studies, DIMSE services).

``patient/`` scopes confine access to the patient's compartment; the scopes of a user's token,
``patient/`` as well as ``user/``, are bounded by the user's role; query-restricted scopes add
their search parameters as a filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sonobridge.core.roles import role_allows
from sonobridge.core.scopes import ResourceScope, resource_scopes

# The DIMSE services a calling AE may be given (PS3.4 service classes, by their usual names).
DIMSE_SERVICES = ("echo", "store", "find", "move", "get", "worklist", "mpps", "commit")
_WORDS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class Forbidden(Exception):
    """The caller is known but may not do this; the message says what is missing."""


@dataclass(frozen=True)
class Policy:
    subject: str  # user id, client id, "dicom:AET", "hl7:APP"
    client_id: str
    scopes: tuple[ResourceScope, ...] = ()
    patient: str | None = None  # patient in context (for patient/ scopes)
    role: str | None = None  # the user's role (for user/ scopes)
    fhir_user: str | None = None
    token_id: str = ""
    # Every resource and study (authorization disabled for local development, or a trusted
    # system caller: an HL7 sender, a DICOM peer, the server itself).
    unrestricted: bool = False
    raw_scope: str = ""
    # The DIMSE services this caller may use (``DIMSE_SERVICES``); empty for HTTP callers.
    services: frozenset[str] = frozenset()
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls) -> Policy:
        """Authorization disabled (``SONOBRIDGE_AUTH=disabled``): everything, anonymously."""
        return cls(subject="anonymous", client_id="", unrestricted=True)

    @classmethod
    def system(cls, subject: str, client_id: str = "",
               services: frozenset[str] = frozenset()) -> Policy:
        """A trusted system caller, named for the audit trail (``hl7:HIS``, ``dicom:CART1``,
        ``sonobridge`` for the server's own writes)."""
        return cls(subject=subject, client_id=client_id, unrestricted=True, services=services)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Policy:
        patient = claims.get("patient")
        return cls(subject=str(claims.get("sub", "")), client_id=str(claims.get("client_id", "")),
                   scopes=tuple(resource_scopes(claims.get("scope"))),
                   patient=patient if isinstance(patient, str) else None,
                   role=claims.get("role"), fhir_user=claims.get("fhirUser"),
                   token_id=str(claims.get("jti", "")), raw_scope=str(claims.get("scope", "")))

    def _usable(self, scope: ResourceScope, resource_type: str, permission: str) -> bool:
        if not scope.covers(resource_type, permission):
            return False
        if resource_type == "AuditEvent" and (scope.context != "user"
                                               or self.role != "audit-admin"):
            return False  # the audit trail: the audit administrator only
        if scope.context == "patient" and not self.patient:
            return False  # a patient scope without a patient in context allows nothing
        if scope.context == "user" or (scope.context == "patient" and self.role is not None):
            # A user's role bounds every scope the user's token carries, patient/ ones too:
            # a trainee who picked a patient still writes only what a trainee may write.
            return role_allows(self.role, resource_type, permission)
        return True

    def grants(self, resource_type: str, permission: str) -> list[ResourceScope]:
        """The scopes that allow ``permission`` (c r u d s) on ``resource_type``."""
        return [s for s in self.scopes if self._usable(s, resource_type, permission)]

    def require(self, resource_type: str, permission: str) -> list[ResourceScope]:
        if self.unrestricted:
            return []
        found = self.grants(resource_type, permission)
        if not found:
            raise Forbidden(f"the token's scopes do not allow {_WORDS[permission]} on "
                            f"{resource_type}")
        return found

    def compartment(self, resource_type: str, permission: str) -> str | None:
        """The patient this access is confined to, or ``None`` when a broader scope allows it."""
        if self.unrestricted:
            return None
        found = self.require(resource_type, permission)
        if any(s.context != "patient" for s in found):
            return None
        return self.patient

    def filters(self, resource_type: str, permission: str) -> list[tuple[tuple[str, str], ...]]:
        """Query restrictions: the access is allowed when ANY of these matches (an empty tuple
        means unrestricted)."""
        if self.unrestricted:
            return [()]
        return [s.query for s in self.require(resource_type, permission)]


@dataclass(frozen=True)
class Caller:
    """What every core service is given with a request: the policy, the FHIR base URL the
    caller sees (absolute references, links), and where it called from (the audit trail)."""

    policy: Policy
    base: str = ""
    address: str = ""  # network address, or the protocol for system callers ("mllp")
    # False when the caller audits the change itself, in the same transaction (an HL7 message
    # is one Import event naming what it changed, not one event per resource it wrote).
    audited: bool = True
    username: str | None = None  # for logins (the audit trail's agent display)

    @property
    def patient_reference(self) -> str | None:
        return f"Patient/{self.policy.patient}" if self.policy.patient else None

    def derived(self) -> Caller:
        """The server writing on this caller's behalf what its request implies (the
        ImagingStudy, Patient and Endpoint of stored images): unrestricted, but still named
        in the audit trail as this caller. The request itself was checked first."""
        policy = self.policy
        if policy.unrestricted:
            return self
        system = Policy(subject=policy.subject, client_id=policy.client_id,
                        fhir_user=policy.fhir_user, token_id=policy.token_id,
                        unrestricted=True)
        return Caller(system, self.base, self.address, self.audited, self.username)
