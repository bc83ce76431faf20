"""SMART scopes, v2 and v1, parsed into what they allow (SMART App Launch 2.2, 3.0.x).

``patient/Observation.rs?category=laboratory`` allows reading and searching the in-context
patient's laboratory Observations. v1 scopes map to v2: ``.read`` = ``rs``, ``.write`` = ``cud``,
``.*`` = ``cruds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
OTHER_SCOPES = {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
                "offline_access", "online_access",
                # a resource server's right to introspect other clients' tokens (RFC 7662)
                "introspection"}
_RESOURCE_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\."
    r"(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>.+))?$")


class ScopeError(ValueError):
    """A scope string that is not a SMART scope."""


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type or *
    permissions: frozenset[str]  # subset of c r u d s
    query: tuple[tuple[str, str], ...] = ()

    def covers(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)

    def text(self) -> str:
        perms = "".join(p for p in PERMISSIONS if p in self.permissions)
        query = "?" + "&".join(f"{k}={v}" for k, v in self.query) if self.query else ""
        return f"{self.context}/{self.resource_type}.{perms}{query}"


def parse_scope(token: str) -> ResourceScope | None:
    """One scope; ``None`` for the non-resource scopes (openid, launch…). Unknown: ScopeError."""
    if token in OTHER_SCOPES or token.startswith("launch/"):
        return None
    match = _RESOURCE_SCOPE.match(token)
    if not match or not match.group("perms"):
        raise ScopeError(f"not a SMART scope: {token!r}")
    perms = match.group("perms")
    if perms == "read":
        allowed = frozenset("rs")
    elif perms == "write":
        allowed = frozenset("cud")
    elif perms == "*":
        allowed = frozenset(PERMISSIONS)
    else:
        allowed = frozenset(perms)
    query = tuple(parse_qsl(match.group("query") or "", keep_blank_values=True))
    return ResourceScope(match.group("context"), match.group("type"), allowed, query)


def split(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split() if s]


def resource_scopes(scope: str | None) -> list[ResourceScope]:
    out = []
    for token in split(scope):
        parsed = parse_scope(token)
        if parsed is not None:
            out.append(parsed)
    return out


def is_within(requested: str, granted: str) -> bool:
    """Whether every requested scope is allowed by some granted one (for narrowing on refresh
    and for a client's registered scopes)."""
    granted_tokens = set(split(granted))
    granted_resources = resource_scopes(granted)
    for token in split(requested):
        if token in granted_tokens:
            continue
        wanted = parse_scope(token)
        if wanted is None:
            return False
        if not any(g.context == wanted.context and g.resource_type in ("*", wanted.resource_type)
                   and wanted.permissions <= g.permissions
                   and (not g.query or g.query == wanted.query)
                   for g in granted_resources):
            return False
    return True
