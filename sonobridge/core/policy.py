"""The policy of one request: who is calling, with which scopes, in which patient's context.

Built once from the access token; every edge asks it (FHIR interactions, searches and their
includes, history, $everything, DICOMweb studies). ``patient/`` scopes confine access to the
patient's compartment; ``user/`` scopes are bounded by the user's role; query-restricted scopes
add their search parameters as a filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sonobridge.core.roles import role_allows
from sonobridge.core.scopes import ResourceScope, resource_scopes


class Forbidden(Exception):
    """The token is valid but does not allow this; the message says what is missing."""


@dataclass(frozen=True)
class Policy:
    subject: str  # user id or client id
    client_id: str
    scopes: tuple[ResourceScope, ...] = ()
    patient: str | None = None  # patient in context (for patient/ scopes)
    role: str | None = None  # the user's role (for user/ scopes)
    fhir_user: str | None = None
    token_id: str = ""
    unrestricted: bool = False  # authorization disabled (local development only)
    raw_scope: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls) -> Policy:
        return cls(subject="anonymous", client_id="", unrestricted=True)

    @classmethod
    def from_claims(cls, claims: dict) -> Policy:
        return cls(subject=str(claims.get("sub", "")), client_id=str(claims.get("client_id", "")),
                   scopes=tuple(resource_scopes(claims.get("scope"))),
                   patient=claims.get("patient"), role=claims.get("role"),
                   fhir_user=claims.get("fhirUser"), token_id=str(claims.get("jti", "")),
                   raw_scope=str(claims.get("scope", "")))

    def _usable(self, scope: ResourceScope, resource_type: str, permission: str) -> bool:
        if not scope.covers(resource_type, permission):
            return False
        if resource_type == "AuditEvent" and (scope.context != "user"
                                               or self.role != "audit-admin"):
            return False  # the audit trail: the audit administrator only
        if scope.context == "patient" and not self.patient:
            return False  # a patient scope without a patient in context allows nothing
        return not (scope.context == "user" and not role_allows(self.role, resource_type,
                                                                permission))

    def grants(self, resource_type: str, permission: str) -> list[ResourceScope]:
        """The scopes that allow ``permission`` (c r u d s) on ``resource_type``."""
        return [s for s in self.scopes if self._usable(s, resource_type, permission)]

    def require(self, resource_type: str, permission: str) -> list[ResourceScope]:
        if self.unrestricted:
            return []
        found = self.grants(resource_type, permission)
        if not found:
            words = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
            raise Forbidden(f"the token's scopes do not allow {words[permission]} on "
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
