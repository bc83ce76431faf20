"""The authorization service one process holds: keys, accounts, tokens, the OAuth server, and
the discovery documents that describe them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from sonobridge.auth.accounts import Accounts
from sonobridge.auth.keys import KeyStore
from sonobridge.auth.secrets import SecretBox
from sonobridge.auth.server import ASSERTION_ALGORITHMS, Site, SmartServer
from sonobridge.auth.tokens import InvalidToken, Tokens
from sonobridge.config import Settings
from sonobridge.core.policy import Policy

SCOPES_SUPPORTED = ["openid", "fhirUser", "profile", "launch", "launch/patient",
                    "launch/encounter", "offline_access", "online_access", "patient/*.cruds",
                    "user/*.cruds", "system/*.cruds", "patient/*.rs", "user/*.rs", "system/*.rs",
                    "patient/*.read", "user/*.read", "system/*.read"]
CAPABILITIES = ["launch-ehr", "launch-standalone", "authorize-post", "client-public",
                "client-confidential-symmetric", "client-confidential-asymmetric",
                "context-banner", "context-style", "context-ehr-patient", "context-ehr-encounter",
                "context-standalone-patient", "permission-offline", "permission-online",
                "permission-patient", "permission-user", "permission-v1", "permission-v2",
                "sso-openid-connect"]


class AuthService:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.enabled = settings.auth_enabled
        self.keys = KeyStore(settings.data_dir / "keys", settings.token_lifetime)
        self.accounts = Accounts(engine, session_idle=settings.session_idle_timeout,
                                 secrets=SecretBox(settings.data_dir / "keys"))
        self.tokens = Tokens(engine, self.keys, lifetime=settings.token_lifetime,
                             refresh_lifetime=settings.refresh_lifetime,
                             session_idle=settings.session_idle_timeout)
        self.server = SmartServer(self.accounts, self.tokens)
        self._policies: dict[str, tuple[dict[str, Any], Policy]] = {}

    def policy(self, token: str, site: Site) -> Policy:
        """The policy of a bearer token presented to this site; ``InvalidToken`` if unusable."""
        claims = self.tokens.check(token, site.fhir_base, site.root)
        # A viewer presents one token for every frame: its Policy (scopes parsed) is made
        # once per verified claims object, which ``check`` keeps per token string.
        cached = self._policies.get(token)
        if cached is not None and cached[0] is claims:
            return cached[1]
        policy = Policy.from_claims(claims)
        if len(self._policies) >= 10_000:
            self._policies.clear()
        self._policies[token] = (claims, policy)
        return policy

    @staticmethod
    def smart_configuration(site: Site) -> dict[str, Any]:
        """``/.well-known/smart-configuration`` (SMART App Launch 2.2 §2.1)."""
        root = site.root
        return {
            "issuer": root,
            "jwks_uri": f"{root}/auth/jwks",
            "authorization_endpoint": f"{root}/auth/authorize",
            "token_endpoint": f"{root}/auth/token",
            "introspection_endpoint": f"{root}/auth/introspect",
            "revocation_endpoint": f"{root}/auth/revoke",
            "registration_endpoint": f"{root}/auth/register",
            "grant_types_supported": ["authorization_code", "client_credentials",
                                      "refresh_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                                                      "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": CAPABILITIES,
        }

    @staticmethod
    def openid_configuration(site: Site) -> dict[str, Any]:
        root = site.root
        return {
            "issuer": root,
            "authorization_endpoint": f"{root}/auth/authorize",
            "token_endpoint": f"{root}/auth/token",
            "jwks_uri": f"{root}/auth/jwks",
            "registration_endpoint": f"{root}/auth/register",
            "end_session_endpoint": f"{root}/auth/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser", "profile"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "amr",
                                 "fhirUser", "preferred_username", "nonce"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                                                      "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
        }


__all__ = ["AuthService", "InvalidToken"]
