"""The authorization code flow: login, consent, patient picker, PKCE, refresh, EHR launch."""

from __future__ import annotations

import time

import pyotp
import pytest
from joserfc import jwt

from tests.auth.smart import FHIR, REDIRECT, ROOT, bearer, pkce

SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"


@pytest.fixture
def app_and_user(smart):
    client, _ = smart.app(SCOPE)
    smart.user("sono1", "sonographer", fhir_user="Practitioner/pr1")
    return client.client_id


def test_standalone_launch_with_patient_picker(smart, app_and_user):
    client_id = app_and_user
    verifier, challenge = pkce()
    params = smart.authorize_params(client_id, SCOPE, challenge)
    login = smart.login(params, "sono1")
    assert login.status == 200
    page = login.page
    assert "Test app" in page and "patient/*.rs" in page
    assert 'value="p1"' in page and 'value="p2"' in page  # the picker
    assert "sonobridge_session" in smart.http.cookies
    no_patient = smart.consent(params, page)
    assert no_patient.status == 200 and "Choose a patient" in no_patient.page
    done = smart.consent(params, page, patient="p1")
    assert done.redirect.startswith(REDIRECT + "?")
    assert done.params["state"] == params["state"]
    r = smart.exchange(client_id, done.params["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["patient"] == "p1" and body["need_patient_banner"] is True
    assert body["smart_style_url"] == f"{ROOT}/auth/smart-style.json"
    assert set(body["scope"].split()) == set(SCOPE.split())
    assert body["refresh_token"]
    id_claims = jwt.decode(body["id_token"], smart.auth.keys.key_set(),
                           algorithms=["RS256"]).claims
    assert id_claims["aud"] == client_id and id_claims["iss"] == ROOT
    assert id_claims["fhirUser"] == f"{FHIR}/Practitioner/pr1"
    assert id_claims["amr"] == ["pwd"]
    token = body["access_token"]
    assert smart.http.get("/fhir/Observation/o1", headers=bearer(token)).status_code == 200
    assert smart.http.get("/fhir/Observation/o2", headers=bearer(token)).status_code == 403
    style = smart.http.get("/auth/smart-style.json")
    assert style.status_code == 200 and "color_background" in style.json()


def test_pkce_is_required_and_s256_only(smart, app_and_user):
    client_id = app_and_user
    for extra in ({}, {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                  {"code_challenge": "x" * 43}):
        params = smart.authorize_params(client_id, SCOPE, None, **extra)
        first = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
        assert first.status_code == 302, (extra, first.text[:300])
        location = first.headers["location"]
        assert location.startswith(REDIRECT) and "error=invalid_request" in location, location
        assert f"state={params['state']}" in location


@pytest.mark.parametrize("verifier", ["wrong", "blank", "missing"])
def test_bad_pkce_verifier_at_the_token_endpoint(smart, app_and_user, verifier):
    client_id = app_and_user
    code, good, _ = smart.code(client_id, "sono1", SCOPE, patient="p1")
    sent = {"wrong": pkce()[0], "blank": "", "missing": None}[verifier]
    r = smart.exchange(client_id, code, sent)
    assert r.status_code == 400
    assert r.json()["error"] in ("invalid_grant", "invalid_request")
    # the code was consumed by the failed attempt
    assert smart.exchange(client_id, code, good).json()["error"] == "invalid_grant"


def test_code_is_single_use_and_bound_to_client_and_redirect(smart, app_and_user):
    client_id = app_and_user
    code, verifier, _ = smart.code(client_id, "sono1", SCOPE, patient="p1")
    assert smart.exchange(client_id, code, verifier).status_code == 200
    again = smart.exchange(client_id, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    other, _ = smart.app(SCOPE)
    code, verifier, _ = smart.code(client_id, "sono1", SCOPE, patient="p1")
    stolen = smart.exchange(other.client_id, code, verifier)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    code, verifier, _ = smart.code(client_id, "sono1", SCOPE, patient="p1")
    moved = smart.exchange(client_id, code, verifier, redirect="https://evil.example.org/cb")
    assert moved.status_code == 400 and moved.json()["error"] == "invalid_grant"


def test_code_expires_after_a_minute(smart, app_and_user, monkeypatch):
    client_id = app_and_user
    code, verifier, _ = smart.code(client_id, "sono1", SCOPE, patient="p1")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 61)
    assert smart.exchange(client_id, code, verifier).json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_is_not_followed(smart, app_and_user):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge,
                                    redirect_uri="https://evil.example.org/cb")
    r = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 400 and "location" not in r.headers
    assert "evil.example.org" in r.text or "Redirect URI" in r.text


@pytest.mark.parametrize("aud", ["https://other.example.org/fhir", None])
def test_aud_must_be_this_fhir_base(smart, app_and_user, aud):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge, aud=aud)
    if aud is None:
        assert "aud" not in params
    r = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]


def test_deny_returns_access_denied(smart, app_and_user):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge)
    login = smart.login(params, "sono1")
    denied = smart.consent(params, login.page, action="deny")
    assert denied.params["error"] == "access_denied"
    assert denied.params["state"] == params["state"]


def test_consent_needs_the_session_csrf_token(smart, app_and_user):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge)
    smart.login(params, "sono1")
    forged = smart.http.post("/auth/authorize", data={**params, "_action": "allow",
                                                      "_csrf": "0" * 32, "patient_id": "p1"},
                             follow_redirects=False)
    assert forged.status_code == 200 and "code=" not in forged.headers.get("location", "")


# ---------------------------------------------------------------------- login

def test_wrong_password_then_a_wait(smart, app_and_user):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge)
    bad = smart.login(params, "sono1", password="Wrong-Password-1")
    assert bad.status == 200 and "not right" in bad.page
    assert "sonobridge_session" not in smart.http.cookies
    for _ in range(4):
        smart.login(params, "sono1", password="Wrong-Password-1")
    waiting = smart.login(params, "sono1")  # the right password, but too soon
    assert "wait a moment" in waiting.page and "_csrf" not in waiting.page
    assert "sonobridge_session" not in smart.http.cookies


@pytest.mark.parametrize("name", ["' OR '1'='1' --", "<script>alert(1)</script>",
                                  "sono1'; DROP TABLE auth_users; --", "x" * 500])
def test_injection_in_login_fields_is_inert(smart, app_and_user, name):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge)
    flow = smart.login(params, name, password=name)
    assert flow.status == 200 and "not right" in flow.page
    assert "<script>alert(1)</script>" not in flow.page
    assert smart.accounts.user("sono1") is not None  # the table is still there


def test_second_factor_for_experts_and_replay_refused(smart):
    client, _ = smart.app(SCOPE)
    secret = smart.user("expert1", "remote-expert")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, SCOPE, challenge)
    needs = smart.login(params, "expert1")
    assert "authenticator" in needs.page and "_csrf" not in needs.page
    code = pyotp.TOTP(secret).now()
    ok = smart.login(params, "expert1", otp=code)
    assert "_csrf" in ok.page
    replay = smart.login(params, "expert1", otp=code)
    assert "_csrf" not in replay.page and "already used" in replay.page


def test_admin_without_enrolled_totp_cannot_log_in(smart):
    client, _ = smart.app(SCOPE)
    smart.user("sysadmin", "system-admin", totp=False)
    _, challenge = pkce()
    flow = smart.login(smart.authorize_params(client.client_id, SCOPE, challenge), "sysadmin")
    assert "second factor" in flow.page and "_csrf" not in flow.page


def test_chinese_pages(smart, app_and_user):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge, ui_locales="zh-CN")
    page = smart.http.get("/auth/authorize", params=params).text
    assert "登录" in page and 'lang="zh-CN"' in page and 'name="otp"' in page
    english = smart.http.get("/auth/authorize", params={**params, "ui_locales": "en"}).text
    assert "Sign in" in english


# ---------------------------------------------------------------------- refresh

def test_refresh_rotates_and_may_only_narrow(smart, app_and_user):
    client_id = app_and_user
    first = smart.user_token(client_id, "sono1", SCOPE, patient="p1")
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
               "client_id": client_id}
    wider = smart.http.post("/auth/token", data={**refresh, "scope": "patient/*.cruds"})
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrow = smart.http.post("/auth/token", data={
        **refresh, "scope": "patient/Observation.rs offline_access"})
    assert narrow.status_code == 200, narrow.text
    second = narrow.json()
    assert second["scope"] == "patient/Observation.rs offline_access"
    assert second["patient"] == "p1"
    assert second["refresh_token"] != first["refresh_token"]
    reused = smart.http.post("/auth/token", data=refresh)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    token = second["access_token"]
    assert smart.http.get("/fhir/Observation/o1", headers=bearer(token)).status_code == 200
    assert smart.http.get("/fhir/Patient/p1", headers=bearer(token)).status_code == 403


def test_online_access_ends_with_the_session(smart):
    scope = "launch/patient patient/*.rs online_access"
    client, _ = smart.app(scope)
    smart.user("sono2", "sonographer")
    body = smart.user_token(client.client_id, "sono2", scope, patient="p1")
    data = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
            "client_id": client.client_id}
    assert smart.http.post("/auth/token", data=data).status_code == 200
    smart.http.post("/auth/logout")
    fresh = smart.user_token(client.client_id, "sono2", scope, patient="p1")
    smart.http.post("/auth/logout")
    data["refresh_token"] = fresh["refresh_token"]
    assert smart.http.post("/auth/token", data=data).json()["error"] == "invalid_grant"


def test_disabled_user_loses_tokens_and_refresh(smart, app_and_user):
    body = smart.user_token(app_and_user, "sono1", SCOPE, patient="p1")
    smart.accounts.set_disabled("sono1", True)
    smart.auth.tokens.sync(force=True)
    r = smart.http.get("/fhir/Observation/o1", headers=bearer(body["access_token"]))
    assert r.status_code == 401
    refreshed = smart.http.post("/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": app_and_user})
    assert refreshed.status_code == 400


# ---------------------------------------------------------------------- EHR launch

def test_ehr_launch_binds_patient_and_study(smart):
    scope = "launch patient/*.rs openid fhirUser"
    client, _ = smart.app(scope)
    smart.user("sono3", "sonographer", fhir_user="Practitioner/pr3")
    user = smart.accounts.user("sono3")
    handle = smart.accounts.create_launch(
        {"patient": "p2", "fhirContext": [{"reference": "ImagingStudy/1.2.3.2"}]}, user)
    body = smart.user_token(client.client_id, "sono3", scope, launch=handle)
    assert body["patient"] == "p2" and body["need_patient_banner"] is False
    assert body["fhirContext"] == [{"reference": "ImagingStudy/1.2.3.2"}]
    token = body["access_token"]
    assert smart.http.get("/fhir/ImagingStudy/1.2.3.2", headers=bearer(token)).status_code == 200
    assert smart.http.get("/fhir/ImagingStudy/1.2.3.1", headers=bearer(token)).status_code == 403


def test_launch_of_another_user_or_unknown_is_refused(smart):
    scope = "launch patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono4", "sonographer")
    smart.user("sono5", "sonographer")
    handle = smart.accounts.create_launch({"patient": "p1"}, smart.accounts.user("sono5"))
    for launch in (handle, "unknown"):
        _, challenge = pkce()
        params = smart.authorize_params(client.client_id, scope, challenge, launch=launch)
        flow = smart.login(params, "sono4")
        assert flow.redirect and "error=invalid_request" in flow.redirect


def test_confidential_client_needs_its_secret_and_pkce(smart):
    scope = "launch/patient patient/*.rs"
    client, secret = smart.app(scope, kind="confidential-symmetric")
    smart.user("sono6", "sonographer")
    code, verifier, _ = smart.code(client.client_id, "sono6", scope, patient="p1")
    no_secret = smart.exchange(client.client_id, code, verifier)
    assert no_secret.status_code in (400, 401)
    code, verifier, _ = smart.code(client.client_id, "sono6", scope, patient="p1")
    ok = smart.exchange(client.client_id, code, verifier, secret=secret)
    assert ok.status_code == 200, ok.text


def test_ehr_launch_with_encounter(smart):
    scope = "launch launch/encounter patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono7", "sonographer")
    handle = smart.accounts.create_launch({"patient": "p1", "encounter": "e1"},
                                          smart.accounts.user("sono7"))
    body = smart.user_token(client.client_id, "sono7", scope, launch=handle)
    assert body["patient"] == "p1" and body["encounter"] == "e1"


def test_idle_session_ends(smart, app_and_user, monkeypatch):
    _, challenge = pkce()
    params = smart.authorize_params(app_and_user, SCOPE, challenge)
    assert "_csrf" in smart.login(params, "sono1").page
    again = smart.http.get("/auth/authorize", params=params)
    assert "_csrf" in again.text  # the session is live: straight to consent
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 16 * 60)
    idle = smart.http.get("/auth/authorize", params=params)
    assert 'name="username"' in idle.text and "_csrf" not in idle.text
