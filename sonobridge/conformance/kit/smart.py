"""The SMART suite (SMART App Launch 2.0, Backend Services): discovery, the CapabilityStatement's
security block, a backend-services token when credentials are given, refusal without one, and
a standalone launch with its scope checks when a user and a public client are given
(``launch.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from sonobridge.conformance.kit import launch
from sonobridge.conformance.kit.fhir import FHIR_JSON, base
from sonobridge.conformance.kit.http import Http, expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

SMART = "https://hl7.org/fhir/smart-app-launch/STU2"
REQUIRED = ("authorization_endpoint", "token_endpoint", "capabilities",
            "code_challenge_methods_supported", "grant_types_supported")


def _config(check: Check) -> dict[str, Any]:
    config: dict[str, Any] = check.ctx.needs("smart_config", "needs the SMART configuration "
                                                             "(smart-disc-01)")
    return config


def discovery(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/.well-known/smart-configuration",
                              headers={"Accept": "application/json"})
    expect_status(response, 200)
    body = json_body(response, "the SMART configuration")
    check.expect(isinstance(body, dict), "the SMART configuration is a JSON object")
    check.ctx.state["smart_config"] = body


def discovery_fields(check: Check) -> None:
    config = _config(check)
    missing = [f for f in REQUIRED if f not in config]
    check.expect(not missing, f"required fields missing: {missing}")
    check.expect(isinstance(config.get("capabilities"), list), "capabilities is an array")
    check.expect("S256" in config.get("code_challenge_methods_supported", []),
                 "PKCE S256 is supported")
    check.expect("plain" not in config.get("code_challenge_methods_supported", []),
                 "PKCE plain is not offered")


def backend_fields(check: Check) -> None:
    config = _config(check)
    check.expect("client_credentials" in config.get("grant_types_supported", []),
                 "grant_types_supported lists client_credentials (backend services)")
    check.expect("private_key_jwt" in config.get("token_endpoint_auth_methods_supported", []),
                 "token_endpoint_auth_methods_supported lists private_key_jwt")
    algs = config.get("token_endpoint_auth_signing_alg_values_supported", [])
    check.expect({"RS384", "ES384"} & set(algs), f"RS384 or ES384 offered; got {algs}")


def capability_security(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    cap = json_body(response, "the CapabilityStatement")
    security = (cap.get("rest") or [{}])[0].get("security", {})
    codes = {c.get("code") for s in security.get("service", []) for c in s.get("coding", [])}
    check.expect("SMART-on-FHIR" in codes, f"rest.security.service has SMART-on-FHIR; got "
                                           f"{codes or 'none'}")


def backend_token(check: Check) -> None:
    options = check.options
    if not (options.smart_client_id and options.smart_key):
        raise Skipped("no backend-services credentials: give --smart-client-id and "
                      "--smart-key PEM_FILE (a key registered for that client)")
    from joserfc import jwt
    from joserfc.jwk import ECKey, RSAKey

    config = _config(check)
    endpoint = config.get("token_endpoint")
    check.expect(endpoint, "the configuration names a token_endpoint")
    pem = Path(options.smart_key).read_bytes()
    key: ECKey | RSAKey
    try:
        key = ECKey.import_key(pem)
        alg = "ES384"
    except (ValueError, TypeError):
        key = RSAKey.import_key(pem)
        alg = "RS384"
    now = int(time.time())
    assertion = jwt.encode({"alg": alg, "typ": "JWT", "kid": key.thumbprint()}, {
        "iss": options.smart_client_id, "sub": options.smart_client_id, "aud": endpoint,
        "jti": uuid.uuid4().hex, "exp": now + 240, "iat": now}, key, algorithms=[alg])
    response = check.http.post(endpoint, data={
        "grant_type": "client_credentials", "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})
    expect_status(response, 200)
    token = json_body(response, "the token response")
    check.expect(token.get("access_token") and token.get("token_type", "").lower() == "bearer",
                 "an access_token of token_type bearer")
    check.ctx.state["smart_token"] = token["access_token"]


def refused_without_token(check: Check) -> None:
    with httpx.Client(timeout=check.options.timeout) as anonymous:
        response = Http(anonymous, check).get(f"{base(check.ctx)}/Patient",
                                              params={"_count": 1},
                                              headers={"Accept": FHIR_JSON})
    check.note(f"GET Patient without a token → {response.status_code}")
    if response.status_code == 200:
        raise Skipped("the server answers without a token (its authorization is off); "
                      "nothing to check")
    if response.status_code != 401:
        raise Failed(f"a request without a token is 401; got {response.status_code}")


def _t(id_: str, title: str, text: str, url: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("smart-disc-01", "SMART configuration", "GET [base]/.well-known/smart-configuration "
       "returns JSON.", f"{SMART}/conformance.html#using-well-known", discovery),
    _t("smart-disc-02", "Required discovery fields", "authorization_endpoint, token_endpoint, "
       "capabilities, grant_types_supported, code_challenge_methods_supported (S256).",
       f"{SMART}/conformance.html#metadata", discovery_fields),
    _t("smart-disc-03", "Backend services advertised", "client_credentials with "
       "private_key_jwt and RS384/ES384.", f"{SMART}/backend-services.html", backend_fields),
    _t("smart-cap-01", "CapabilityStatement security", "rest.security.service names "
       "SMART-on-FHIR.", f"{SMART}/conformance.html", capability_security),
    _t("smart-backend-01", "Backend-services token", "A signed client assertion obtains an "
       "access token.", f"{SMART}/backend-services.html#obtain-access-token", backend_token),
    _t("smart-auth-01", "No token, no data", "A protected FHIR request without a token is 401.",
       f"{SMART}/app-launch.html#access-denied-response", refused_without_token),
    *launch.TESTS,
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("smart", "SMART on FHIR", TESTS)]


SUITE = Suite("smart", "SMART on FHIR", groups)
