"""A SMART client driven from tests: users, clients, assertions, the authorization code flow.

Everything goes over HTTP to the app (login form, consent form, token endpoint), as a browser
and an app would; the only shortcuts are creating users and clients (the CLI's job) and seeding
clinical data.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from sonobridge.auth.service import AuthService
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.services import Core

ROOT = "http://sono.test"
FHIR = f"{ROOT}/fhir"
TOKEN_URL = f"{ROOT}/auth/token"
REDIRECT = "https://app.example.org/callback"
PASSWORD = "Ultra-Sound-2026"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).decode().rstrip("=")
    return verifier, challenge


@dataclass
class Flow:
    """What the authorization endpoint answered at each step."""

    redirect: str | None = None
    page: str = ""
    status: int = 0

    @property
    def params(self) -> dict[str, str]:
        assert self.redirect, f"no redirect; page: {self.page[:500]}"
        return {k: v[0] for k, v in parse_qs(urlsplit(self.redirect).query).items()}


class Smart:
    def __init__(self, http: Any, core: Core, auth: AuthService) -> None:
        self.http = http
        self.core = core
        self.auth = auth
        self.accounts = auth.accounts

    # ------------------------------------------------------------------ setup

    def user(self, name: str, role: str, *, fhir_user: str | None = None,
             totp: bool | None = None) -> Any:
        user = self.accounts.add_user(name, role, PASSWORD, fhir_user)
        if totp or (totp is None and user.needs_totp):
            import pyotp

            secret = pyotp.random_base32()
            self.accounts.set_totp(name, secret)
            return secret
        return None

    def app(self, scope: str, kind: str = "public", redirect: str = REDIRECT) -> Any:
        client, secret = self.accounts.add_client("Test app", kind, scope,
                                                  redirect_uris=[redirect])
        return client, secret

    def backend(self, scope: str = "system/*.cruds", alg: str = "RS384") -> tuple[str, Any]:
        key = ECKey.generate_key("P-384") if alg.startswith("ES") else RSAKey.generate_key(2048)
        jwks = {"keys": [{**key.as_dict(private=False), "kid": "k1", "alg": alg}]}
        client, _ = self.accounts.add_client("Backend", "confidential-asymmetric", scope,
                                             jwks=jwks)
        return client.client_id, key

    def symmetric(self, scope: str = "system/*.cruds") -> tuple[str, str]:
        client, secret = self.accounts.add_client("Symmetric backend",
                                                  "confidential-symmetric", scope)
        assert secret is not None
        return client.client_id, secret

    def seed(self, *resources: dict[str, Any]) -> None:
        for resource in resources:
            self.core.resources.update(Caller(Policy.open(), FHIR), resource["resourceType"],
                                       resource["id"], resource)

    # ------------------------------------------------------------------ tokens

    def assertion(self, client_id: str, key: Any, *, alg: str = "RS384", aud: str = TOKEN_URL,
                  exp: float | None = None, jti: str | None = None, kid: str = "k1",
                  **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": client_id, "sub": client_id, "aud": aud,
                "exp": int(exp if exp is not None else now + 240),
                "jti": str(uuid.uuid4()) if jti is None else jti, **claims}
        if body["jti"] == "":
            del body["jti"]
        return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, body, key,
                          algorithms=[alg])

    def backend_token(self, client_id: str, key: Any, scope: str, **kwargs: Any) -> Any:
        return self.http.post("/auth/token", data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(client_id, key, **kwargs)})

    def system_token(self, scope: str = "system/*.cruds") -> str:
        client_id, secret = self.symmetric(scope)
        r = self.http.post("/auth/token", data={"grant_type": "client_credentials",
                                                "scope": scope}, auth=(client_id, secret))
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    # ------------------------------------------------------------------ the code flow

    def authorize_params(self, client_id: str, scope: str, challenge: str | None,
                         **extra: str) -> dict[str, str]:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                  "scope": scope, "state": "st-" + secrets.token_hex(4), "aud": FHIR}
        if challenge is not None:
            params["code_challenge"] = challenge
            params["code_challenge_method"] = "S256"
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    def step(self, response: Any) -> Flow:
        if response.status_code in (302, 303):
            return Flow(redirect=response.headers["location"], status=response.status_code)
        return Flow(page=response.text, status=response.status_code)

    def login(self, params: dict[str, str], username: str, password: str = PASSWORD,
              otp: str | None = None) -> Flow:
        self.http.cookies.clear()
        first = self.http.get("/auth/authorize", params=params, follow_redirects=False)
        if first.status_code != 200 or 'name="username"' not in first.text:
            return self.step(first)
        form = {**params, "_action": "login", "username": username, "password": password}
        token = re.search(r'name="_login" value="([^"]*)"', first.text)
        if token:  # the login form's CSRF token, as a browser posts it back
            form["_login"] = token.group(1)
        if otp is not None:
            form["otp"] = otp
        return self.step(self.http.post("/auth/authorize", data=form, follow_redirects=False))

    def consent(self, params: dict[str, str], page: str, action: str = "allow",
                **fields: str) -> Flow:
        match = re.search(r'name="_csrf" value="([^"]+)"', page)
        assert match, f"no consent form: {page[:800]}"
        form = {**params, "_csrf": match.group(1), "_action": action, **fields}
        return self.step(self.http.post("/auth/authorize", data=form, follow_redirects=False))

    def code(self, client_id: str, username: str, scope: str, *, otp: str | None = None,
             patient: str | None = None, **extra: str) -> tuple[str, str, dict[str, str]]:
        """Log in and consent; returns (code, verifier, authorize params)."""
        verifier, challenge = pkce()
        params = self.authorize_params(client_id, scope, challenge, **extra)
        flow = self.login(params, username, otp=otp)
        assert flow.status == 200 and "_csrf" in flow.page, flow.page[:800]
        fields = {"patient_id": patient} if patient else {}
        done = self.consent(params, flow.page, **fields)
        got = done.params
        assert got.get("state") == params["state"], got
        assert "code" in got, got
        return got["code"], verifier, params

    def exchange(self, client_id: str, code: str, verifier: str | None, *,
                 secret: str | None = None, redirect: str = REDIRECT) -> Any:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
        if verifier is not None:
            data["code_verifier"] = verifier
        if secret is None:
            data["client_id"] = client_id
            return self.http.post("/auth/token", data=data)
        return self.http.post("/auth/token", data=data, auth=(client_id, secret))

    def user_token(self, client_id: str, username: str, scope: str, **kwargs: Any
                   ) -> dict[str, Any]:
        code, verifier, _ = self.code(client_id, username, scope, **kwargs)
        r = self.exchange(client_id, code, verifier)
        assert r.status_code == 200, r.text
        return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
