"""SMART Backend Services (client_credentials + private_key_jwt) and bearer token checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.auth.smart import FHIR, ROOT, TOKEN_URL, bearer


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_service_gets_a_token_and_reads(smart, alg):
    client_id, key = smart.backend("system/Patient.rs system/Observation.rs", alg=alg)
    r = smart.backend_token(client_id, key, "system/Observation.rs", alg=alg)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/Observation.rs"
    assert 0 < body["expires_in"] <= 3600 and "refresh_token" not in body
    claims = jwt.decode(body["access_token"], smart.auth.keys.key_set(),
                        algorithms=["RS256"]).claims
    assert claims["aud"] == FHIR and claims["iss"] == ROOT and claims["sub"] == client_id
    ok = smart.http.get("/fhir/Observation/o1", headers=bearer(body["access_token"]))
    assert ok.status_code == 200 and ok.json()["id"] == "o1"
    # the granted scope is Observation only
    other = smart.http.get("/fhir/Patient/p1", headers=bearer(body["access_token"]))
    assert other.status_code == 403
    assert other.json()["resourceType"] == "OperationOutcome"
    assert "insufficient_scope" in other.headers["www-authenticate"]


def _error(r) -> str:
    assert r.status_code in (400, 401), (r.status_code, r.text)
    return r.json()["error"]


def test_rs256_assertion_is_refused(smart):
    client_id, key = smart.backend(alg="RS256")
    assert _error(smart.backend_token(client_id, key, "system/*.rs", alg="RS256")) == \
        "invalid_client"


def test_reused_jti_is_refused(smart):
    client_id, key = smart.backend()
    assert smart.backend_token(client_id, key, "system/*.rs", jti="once").status_code == 200
    again = smart.backend_token(client_id, key, "system/*.rs", jti="once")
    assert _error(again) == "invalid_client"
    assert "already used" in again.json()["error_description"]


@pytest.mark.parametrize("case", ["wrong-aud", "exp-too-far", "expired", "no-jti",
                                  "iss-not-sub", "foreign-key"])
def test_bad_assertions_are_refused(smart, case):
    client_id, key = smart.backend()
    now = time.time()
    kwargs: dict = {}
    if case == "wrong-aud":
        kwargs["aud"] = "https://other.example.org/token"
    elif case == "exp-too-far":
        kwargs["exp"] = now + 600
    elif case == "expired":
        kwargs["exp"] = now - 10
    elif case == "no-jti":
        kwargs["jti"] = ""
    elif case == "iss-not-sub":
        kwargs["iss"] = "someone-else"
    elif case == "foreign-key":
        key = RSAKey.generate_key(2048)
    r = smart.backend_token(client_id, key, "system/*.rs", **kwargs)
    assert _error(r) == "invalid_client", r.text


def test_backend_service_may_not_ask_for_user_or_wider_scopes(smart):
    client_id, key = smart.backend("system/Observation.rs")
    assert _error(smart.backend_token(client_id, key, "system/Patient.rs")) == "invalid_scope"
    assert _error(smart.backend_token(client_id, key, "user/*.rs")) == "invalid_scope"
    assert _error(smart.backend_token(client_id, key, "")) == "invalid_scope"


def test_symmetric_client_secret(smart):
    client_id, secret = smart.symmetric("system/*.rs")
    data = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    assert smart.http.post("/auth/token", data=data, auth=(client_id, secret)).status_code == 200
    wrong = smart.http.post("/auth/token", data=data, auth=(client_id, "nope"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_token_endpoint_takes_only_forms(smart):
    r = smart.http.post("/auth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = smart.http.post("/auth/token", data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_revoked_client_and_its_tokens_stop_working(smart):
    client_id, key = smart.backend("system/*.rs")
    token = smart.backend_token(client_id, key, "system/*.rs").json()["access_token"]
    assert smart.http.get("/fhir/Patient/p1", headers=bearer(token)).status_code == 200
    smart.accounts.set_client(client_id, revoked=True)
    smart.auth.tokens.sync(force=True)
    assert smart.http.get("/fhir/Patient/p1", headers=bearer(token)).status_code == 401
    assert _error(smart.backend_token(client_id, key, "system/*.rs")) == "invalid_client"


# ---------------------------------------------------------------------- presenting tokens

def test_missing_token_is_401_with_a_bearer_challenge(smart):
    for path in ("/fhir/Patient/p1", "/dicomweb/studies", "/wado?requestType=WADO"):
        r = smart.http.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
    fhir = smart.http.get("/fhir/Patient/p1")
    assert fhir.json()["resourceType"] == "OperationOutcome"
    assert smart.http.get("/dicomweb/studies").json()["error"] == "unauthorized"
    # discovery stays public
    assert smart.http.get("/fhir/metadata").status_code == 200
    assert smart.http.get("/fhir/.well-known/smart-configuration").status_code == 200


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _forged(smart, case: str) -> str:
    good = smart.system_token("system/*.rs")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    if case == "bad-signature":
        return f"{header}.{_b64({**claims, 'scope': 'system/*.cruds'})}.{signature}"
    if case == "alg-none":
        return f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}."
    if case == "hs256-with-public-key":
        # The classic confusion attack, built by hand (JOSE libraries refuse to build it):
        # an HMAC keyed with the server's public key.
        public = smart.auth.keys.current().key.as_pem(private=False)
        head = _b64({"alg": "HS256", "typ": "at+jwt", "kid": smart.auth.keys.current().kid})
        signing_input = f"{head}.{payload}".encode()
        mac = hmac.new(public, signing_input, hashlib.sha256).digest()
        return f"{head}.{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    if case == "expired":
        signing = smart.auth.keys.current()
        return jwt.encode({"alg": "RS256", "kid": signing.kid, "typ": "at+jwt"},
                          {**claims, "exp": int(time.time()) - 5}, signing.key)
    if case == "wrong-aud":
        signing = smart.auth.keys.current()
        return jwt.encode({"alg": "RS256", "kid": signing.kid, "typ": "at+jwt"},
                          {**claims, "aud": "https://elsewhere.example.org/fhir"}, signing.key)
    if case == "garbage":
        return "not-a-jwt"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["bad-signature", "alg-none", "hs256-with-public-key",
                                  "expired", "wrong-aud", "garbage"])
def test_forged_or_unusable_tokens_get_401(smart, case):
    token = _forged(smart, case)
    for path in ("/fhir/Patient/p1", "/dicomweb/studies"):
        r = smart.http.get(path, headers=bearer(token))
        assert r.status_code == 401, (case, path, r.text)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_id_token_is_not_an_access_token(smart):
    signing = smart.auth.keys.current()
    id_token = jwt.encode({"alg": "RS256", "kid": signing.kid},
                          {"iss": ROOT, "aud": FHIR, "exp": int(time.time()) + 60,
                           "sub": "1", "scope": "system/*.cruds", "jti": "x"}, signing.key)
    assert smart.http.get("/fhir/Patient/p1", headers=bearer(id_token)).status_code == 401


def test_token_endpoint_url_in_assertion_aud_is_this_server(smart):
    conf = smart.http.get("/fhir/.well-known/smart-configuration").json()
    assert conf["token_endpoint"] == TOKEN_URL


def test_keys_from_a_jwks_url(smart, respx_mock):
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-384")
    url = "https://platform.example.org/.well-known/jwks.json"
    route = respx_mock.get(url).respond(json={"keys": [
        {**key.as_dict(private=False), "kid": "k1", "alg": "ES384"}]})
    client, _ = smart.accounts.add_client("Platform", "confidential-asymmetric",
                                          "system/*.rs", jwks_url=url)
    r = smart.backend_token(client.client_id, key, "system/*.rs", alg="ES384")
    assert r.status_code == 200, r.text
    assert route.called
    stranger = ECKey.generate_key("P-384")
    assert _error(smart.backend_token(client.client_id, stranger, "system/*.rs",
                                      alg="ES384")) == "invalid_client"
