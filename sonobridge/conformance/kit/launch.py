"""SMART App Launch 2.0, standalone launch, driven headless: the kit plays the browser (it reads
the server's HTML forms, keeps the cookies, posts back every hidden field a page carries, its
anti-forgery tokens among them) and the public app (PKCE S256, the code exchanged at the token
endpoint). Then the scopes: the token reads its patient, not another one, and nothing its scopes
do not cover.

The driver knows no server's pages: a form with a password field is a login form (the user
name goes to its first text field, a TOTP code to a field named like otp/totp/code), any other
form is a consent or patient-picker page (the patient radio or text field is filled, the
submit button that reads allow/approve/authorize is pressed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, base
from sonobridge.conformance.kit.http import Http, expect_status, json_body
from sonobridge.conformance.kit.model import Check, Evidence, Failed, Requirement, Skipped
from sonobridge.conformance.kit.model import TestDef as T

SMART = "https://hl7.org/fhir/smart-app-launch/STU2"
DEFAULT_SCOPE = "openid fhirUser launch/patient patient/Patient.rs"
MAX_STEPS = 8
ALLOW = re.compile(r"allow|approve|authori[sz]e|accept|grant|continue|允许|同意|授权", re.I)
OTP_NAMES = re.compile(r"otp|totp|one.?time|mfa|2fa|code", re.I)
PATIENT_NAMES = re.compile(r"patient", re.I)
# Types a patient token is tried on when its scopes do not cover them (smart-scope-02).
OUT_OF_SCOPE = ("Observation", "DiagnosticReport", "ImagingStudy", "Encounter", "Condition")


# ---------------------------------------------------------------------- reading HTML forms

@dataclass
class Form:
    action: str
    method: str
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, value)
    radios: dict[str, list[str]] = field(default_factory=dict)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, text)

    @property
    def has_password(self) -> bool:
        return any(kind == "password" for kind, _, _ in self.inputs)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.alerts: list[str] = []
        self._form: Form | None = None
        self._button: list[str] | None = None
        self._alert_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("role") == "alert" or "error" in a.get("class", "").split():
            self._alert_depth += 1
            self.alerts.append("")
        elif self._alert_depth:
            self._alert_depth += 1
        if tag == "form":
            self._form = Form(a.get("action", ""), (a.get("method") or "get").lower())
            self.forms.append(self._form)
        elif self._form is None or (not a.get("name") and tag != "button"):
            return
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind == "radio":
                self._form.radios.setdefault(a["name"], []).append(a.get("value", "on"))
            elif kind in ("submit", "image"):
                self._form.buttons.append((a["name"], a.get("value", ""), a.get("value", "")))
            elif kind not in ("checkbox", "reset", "file"):
                self._form.inputs.append((kind, a["name"], a.get("value", "")))
        elif tag == "button" and (a.get("type") or "submit").lower() == "submit":
            self._button = [a.get("name", ""), a.get("value", ""), ""]
        elif tag == "textarea":
            self._form.inputs.append(("text", a["name"], ""))

    def handle_endtag(self, tag: str) -> None:
        if self._alert_depth:
            self._alert_depth -= 1
        if tag == "button" and self._button is not None and self._form is not None:
            name, value, text = self._button
            self._form.buttons.append((name, value, text.strip()))
            self._button = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button[2] += data
        if self._alert_depth and self.alerts:
            self.alerts[-1] += data


def parse_forms(html: str) -> tuple[list[Form], list[str]]:
    """The page's forms and the text of its error messages (role=alert or class error)."""
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms, [a.strip() for a in parser.alerts if a.strip()]


def totp(secret: str, at: float | None = None, digits: int = 6, step: int = 30) -> str:
    """RFC 6238 with SHA-1, as authenticator apps compute it."""
    key = base64.b32decode(secret.upper().replace(" ", "") + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10 ** digits).zfill(digits)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).decode().rstrip("=")
    return verifier, challenge


def _submit(form: Form) -> list[tuple[str, str]]:
    """The button a user would press to go on: the one that reads allow/approve, else the
    first; only a named button adds its name=value."""
    if not form.buttons:
        return []
    chosen = next((b for b in form.buttons if ALLOW.search(f"{b[1]} {b[2]}")), form.buttons[0])
    return [(chosen[0], chosen[1])] if chosen[0] else []


def fill_login(form: Form, user: str, password: str, otp: str | None) -> list[tuple[str, str]]:
    data: list[tuple[str, str]] = []
    user_done = False
    for kind, name, value in form.inputs:
        if kind == "hidden":
            data.append((name, value))
        elif kind == "password":
            data.append((name, password))
        elif OTP_NAMES.search(name):
            data.append((name, otp or ""))
        elif not user_done and kind in ("text", "email"):
            data.append((name, user))
            user_done = True
        else:
            data.append((name, value))
    return data + _submit(form)


def fill_consent(form: Form, patient: str | None) -> tuple[list[tuple[str, str]], str | None,
                                                           list[str]]:
    """The consent form filled; the patient picked (None if the page asked for none) and the
    patients the picker offered."""
    data: list[tuple[str, str]] = []
    offered: list[str] = []
    picked: str | None = None
    for name, values in form.radios.items():
        if PATIENT_NAMES.search(name):
            offered = values
            if patient is None or patient in values:
                picked = patient or (values[0] if values else None)
                if picked:
                    data.append((name, picked))
        elif values:
            data.append((name, values[0]))
    for kind, name, value in form.inputs:
        if kind != "hidden" and PATIENT_NAMES.search(name):
            if picked is None and patient:
                picked = patient
                data.append((name, patient))
            continue
        data.append((name, value))
    return data + _submit(form), picked, offered


# ---------------------------------------------------------------------- the tests

def _options(check: Check) -> Any:
    o = check.options
    if not (o.smart_user and o.smart_password and o.smart_app_client_id and
            o.smart_redirect_uri):
        raise Skipped("no user to launch as: give --user NAME --password PW [--totp-secret S] "
                      "and a registered public client --client-id ID --redirect-uri URI")
    return o


def _config(check: Check) -> dict[str, Any]:
    config: dict[str, Any] = check.ctx.needs("smart_config", "needs the SMART configuration "
                                                             "(smart-disc-01)")
    return config


def _scope(check: Check) -> list[str]:
    return (check.options.smart_scope or DEFAULT_SCOPE).split()


def standalone_launch(check: Check) -> None:
    o = _options(check)
    config = _config(check)
    endpoint = config.get("authorization_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise Failed("the configuration names no authorization_endpoint")
    verifier, challenge = pkce()
    state = "kit-" + secrets.token_hex(8)
    params = {"response_type": "code", "client_id": o.smart_app_client_id,
              "redirect_uri": o.smart_redirect_uri, "scope": " ".join(_scope(check)),
              "state": state, "aud": base(check.ctx), "code_challenge": challenge,
              "code_challenge_method": "S256"}
    location = None
    logged_in = consented = False
    picked: str | None = None
    offered: list[str] = []
    # A browser of its own: no bearer token, its own cookie jar, redirects seen one by one.
    with httpx.Client(timeout=o.timeout, follow_redirects=False) as browser:
        http = Http(browser, check)
        response = http.get(endpoint, params=params)
        for _ in range(MAX_STEPS):
            here = str(response.request.url)
            if response.status_code in (301, 302, 303, 307, 308):
                target = urljoin(here, response.headers.get("location", ""))
                if target.startswith(o.smart_redirect_uri):
                    location = target
                    break
                response = http.get(target)
                continue
            ctype = response.headers.get("content-type", "")
            if response.status_code != 200 or "html" not in ctype:
                raise Failed(f"the authorization endpoint answered HTTP "
                             f"{response.status_code} ({ctype or 'no content type'}), not a "
                             f"page to sign in on or a redirect to the app")
            forms, alerts = parse_forms(response.text)
            said = f" (the page says: {'; '.join(alerts)[:200]})" if alerts else ""
            login = next((f for f in forms if f.has_password), None)
            if login is not None:
                if logged_in:
                    raise Failed(f"the login form came back after signing in{said}")
                otp = totp(o.smart_totp_secret) if o.smart_totp_secret else None
                data = fill_login(login, o.smart_user, o.smart_password, otp)
                form, logged_in = login, True
                check.note(f"login form: posted fields {sorted({k for k, _ in data})}")
            else:
                found = next((f for f in forms if f.buttons), None) or \
                    (forms[0] if forms else None)
                if found is None:
                    raise Failed(f"a page with no form and no redirect to the app{said}")
                form = found
                if consented:
                    raise Failed(f"the consent page came back after allowing{said}")
                data, picked, offered = fill_consent(form, o.smart_patient)
                consented = True
                check.note(f"consent page: posted fields {sorted({k for k, _ in data})}; "
                           f"patients offered {offered}; picked {picked}")
            url = urljoin(here, form.action or here)
            if form.method == "post":
                body: dict[str, list[str]] = {}
                for key, value in data:  # a form may repeat a name; order is kept per name
                    body.setdefault(key, []).append(value)
                response = http.post(url, data=body)
            else:
                response = http.get(url, params=data)
        else:
            raise Failed(f"no redirect to the app after {MAX_STEPS} steps")
    got = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    check.record(Evidence("note", f"redirect to the app: {location.split('?')[0]}?"
                          f"{', '.join(sorted(got))}"))
    check.expect("error" not in got, f"the server refused: {got.get('error')} "
                                     f"{got.get('error_description', '')}")
    check.expect(got.get("state") == state, f"the redirect echoes state {state}; got "
                                            f"{got.get('state')}")
    check.expect(got.get("code"), "the redirect carries a code")
    check.ctx.state["smart_code"] = (got["code"], verifier)
    check.ctx.state["smart_offered"] = offered
    check.ctx.state["smart_picked"] = picked


def _exchange(check: Check, code: str, verifier: str) -> httpx.Response:
    o = check.options
    with httpx.Client(timeout=o.timeout) as app:  # a public client: no credentials at all
        return Http(app, check).post(_config(check)["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": o.smart_redirect_uri, "code_verifier": verifier,
            "client_id": o.smart_app_client_id})


def _b64json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _check_id_token(check: Check, id_token: str) -> None:
    parts = id_token.split(".")
    check.expect(len(parts) == 3, "id_token is a signed JWT (three parts)")
    try:
        claims = _b64json(parts[1])
    except ValueError:
        raise Failed("id_token's claims are not base64url JSON") from None
    aud = claims.get("aud")
    check.expect(check.options.smart_app_client_id in (aud if isinstance(aud, list) else [aud]),
                 f"id_token aud is the client id; got {aud}")
    check.expect(claims.get("iss") and claims.get("sub"), "id_token has iss and sub")
    check.expect(isinstance(claims.get("exp"), int) and claims["exp"] > time.time(),
                 "id_token has not expired")
    if "fhirUser" in _scope(check) and claims.get("fhirUser"):
        check.note(f"fhirUser {claims['fhirUser']}")
    jwks_uri = _config(check).get("jwks_uri")
    if not jwks_uri:
        check.note("no jwks_uri in the SMART configuration: the signature is not verified")
        return
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    with httpx.Client(timeout=check.options.timeout) as app:
        keys = json_body(Http(app, check).get(jwks_uri), "the JWKS")
    try:
        jwt.decode(id_token, KeySet.import_key_set(keys),
                   algorithms=[_b64json(parts[0]).get("alg", "RS256")])
    except (JoseError, ValueError, TypeError) as exc:
        raise Failed(f"id_token's signature does not verify with {jwks_uri}: {exc}") from None
    check.note("id_token signature verified with the server's JWKS")


def token_exchange(check: Check) -> None:
    _options(check)
    code, verifier = check.ctx.needs("smart_code", "needs an authorization code "
                                                   "(smart-launch-01)")
    response = _exchange(check, code, verifier)
    expect_status(response, 200)
    token = json_body(response, "the token response")
    check.expect(isinstance(token, dict) and token.get("access_token"), "an access_token")
    check.expect(str(token.get("token_type", "")).lower() == "bearer", "token_type bearer")
    check.expect(isinstance(token.get("scope"), str) and token["scope"],
                 "the granted scope is returned")
    asked = _scope(check)
    if "launch/patient" in asked or any(s.startswith("patient/") for s in asked):
        check.expect(token.get("patient"), "a patient context (patient) with a patient scope")
        picked = check.ctx.state.get("smart_picked")
        check.expect(picked is None or token["patient"] == picked,
                     f"the patient is the one picked ({picked}); got {token.get('patient')}")
    if "openid" in asked:
        check.expect(token.get("id_token"), "an id_token when openid is asked")
        _check_id_token(check, token["id_token"])
    check.ctx.state["smart_user_token"] = token
    check.ctx.state["smart_code_used"] = (code, verifier)


def code_reuse(check: Check) -> None:
    code, verifier = check.ctx.needs("smart_code_used", "needs a code already exchanged "
                                                        "(smart-launch-02)")
    response = _exchange(check, code, verifier)
    check.expect(response.status_code == 400, f"a code used twice is refused with 400; got "
                                              f"{response.status_code}")
    body = json_body(response, "the error response")
    check.expect(body.get("error") == "invalid_grant", f"error invalid_grant; got "
                                                       f"{body.get('error')}")


def _token(check: Check) -> dict[str, Any]:
    token: dict[str, Any] = check.ctx.needs("smart_user_token", "needs the launch's token "
                                                                "(smart-launch-02)")
    return token


def _bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}", "Accept": FHIR_JSON}


def reads_patient(check: Check) -> None:
    token = _token(check)
    patient = token.get("patient")
    if not patient:
        raise Skipped("the token has no patient context")
    response = check.http.get(f"{base(check.ctx)}/Patient/{patient}", headers=_bearer(token))
    expect_status(response, 200)
    body = json_body(response, "the Patient")
    check.expect(body.get("resourceType") == "Patient" and body.get("id") == patient,
                 f"Patient/{patient} is read with the token")


def other_patient(check: Check) -> None:
    token = _token(check)
    patient = token.get("patient")
    if not patient:
        raise Skipped("the token has no patient context")
    others = [p for p in check.ctx.state.get("smart_offered") or [] if p != patient]
    other = check.options.smart_other_patient or (others[0] if others else None)
    if other is None:
        other = "sbkit-" + secrets.token_hex(6)
        check.note(f"the picker offered no other patient and no --other-patient was given: "
                   f"trying a made-up id, Patient/{other}")
    fhir = base(check.ctx)
    response = check.http.get(f"{fhir}/Patient/{other}", headers=_bearer(token))
    check.expect(response.status_code in (403, 404), f"reading Patient/{other} with "
                 f"Patient/{patient}'s token is 403 or 404; got {response.status_code}")
    search = check.http.get(f"{fhir}/Patient", params={"_id": other}, headers=_bearer(token))
    if search.status_code == 200:
        found = [e.get("resource", {}).get("id")
                 for e in json_body(search, "the search Bundle").get("entry", [])]
        check.expect(other not in found, f"a search for _id={other} does not return it")
    else:
        check.expect(search.status_code == 403, f"a search for another patient is 403 or "
                                                f"finds nothing; got {search.status_code}")


def _covers(scope: str, kind: str) -> bool:
    head = scope.split("?")[0]
    if "/" not in head or head.startswith("launch"):
        return False
    _, _, rest = head.partition("/")
    rtype, _, _ = rest.partition(".")
    return rtype in ("*", kind)


def out_of_scope(check: Check) -> None:
    token = _token(check)
    granted = str(token.get("scope", "")).split()
    kind = next((k for k in OUT_OF_SCOPE if not any(_covers(s, k) for s in granted)), None)
    if kind is None:
        raise Skipped(f"the granted scopes cover every type tried ({', '.join(OUT_OF_SCOPE)}): "
                      f"ask for a narrower --smart-scope")
    params = {"patient": token["patient"]} if token.get("patient") else {}
    response = check.http.get(f"{base(check.ctx)}/{kind}", params=params,
                              headers=_bearer(token))
    check.expect(response.status_code == 403, f"a search of {kind}, which the scopes "
                 f"{granted} do not cover, is 403; got {response.status_code}")


def _t(id_: str, title: str, text: str, url: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("smart-launch-01", "Standalone launch", "The authorization endpoint leads a user through "
       "sign-in and consent (patient picker) to a redirect with a code and the app's state.",
       f"{SMART}/app-launch.html#obtain-authorization-code", standalone_launch),
    _t("smart-launch-02", "Code exchange with PKCE S256", "The code and its code_verifier "
       "obtain a bearer token with the granted scope, the patient context, and an id_token "
       "when openid is asked.", f"{SMART}/app-launch.html#obtain-access-token", token_exchange),
    _t("smart-launch-03", "A code is used once", "A second exchange of the same code is "
       "refused (invalid_grant).", "https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2",
       code_reuse),
    _t("smart-launch-04", "The token reads its patient", "The access token reads the Patient "
       "named in the token response.", f"{SMART}/app-launch.html#access-fhir-api",
       reads_patient),
    _t("smart-scope-01", "Not another patient", "A patient/ token cannot read another "
       "patient's data (403 or 404; a search does not return it).",
       f"{SMART}/scopes-and-launch-context.html#patient-specific-scopes", other_patient),
    _t("smart-scope-02", "Not outside the scopes", "A request for a resource type the token's "
       "scopes do not cover is 403.", f"{SMART}/scopes-and-launch-context.html", out_of_scope),
]
