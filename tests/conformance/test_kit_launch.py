"""The standalone launch's headless form driver on pages that are not SonoBridge's (other field
names, a named login button, an error message), RFC 6238 codes, and an authorization server
that misbehaves: a refused login, a login that never ends, JSON where a page was due. Each is a
failed test with the reason, the tests after it skip, the password never reaches the report."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from sonobridge.conformance.kit.launch import fill_consent, fill_login, parse_forms, totp
from sonobridge.conformance.kit.model import FAIL, SKIP
from sonobridge.conformance.kit.report import write_json
from sonobridge.conformance.kit.runner import Options, run

LOGIN = """<html><body><div class="alert error" role="alert">Invalid username or password.</div>
<form id="kc-form-login" action="/realms/r/login-actions/authenticate?execution=e1"
 method="POST"><input type="hidden" name="session_code" value="s&amp;1">
<input tabindex="1" id="username" name="username" type="text" autofocus>
<input id="password" name="password" type="password"><input name="totp" type="text">
<input type="checkbox" name="rememberMe"><input type="submit" name="login" value="Sign In">
</form></body></html>"""

CONSENT = """<form method="post" action="/consent"><input type="hidden" name="state" value="x">
<fieldset><input type="radio" name="selected_patient" value="p1">
<input type="radio" name="selected_patient" value="p2"></fieldset>
<button type="submit" name="decision" value="no">Deny</button>
<button type="submit" name="decision" value="yes">Approve access</button></form>"""


def test_a_foreign_login_form_is_filled_by_its_field_types():
    forms, alerts = parse_forms(LOGIN)
    assert alerts == ["Invalid username or password."]
    (form,) = forms
    assert form.has_password and form.method == "post"
    assert form.action == "/realms/r/login-actions/authenticate?execution=e1"
    data = fill_login(form, "ana", "pw", "123456")
    assert data == [("session_code", "s&1"), ("username", "ana"), ("password", "pw"),
                    ("totp", "123456"), ("login", "Sign In")]


def test_a_consent_page_picks_the_patient_and_presses_approve():
    (form,) = parse_forms(CONSENT)[0]
    data, picked, offered = fill_consent(form, None)
    assert offered == ["p1", "p2"] and picked == "p1"
    assert data == [("selected_patient", "p1"), ("state", "x"), ("decision", "yes")]
    assert fill_consent(form, "p2")[1] == "p2"


def test_totp_is_rfc_6238():
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # "12345678901234567890", appendix B
    assert totp(secret, at=59, digits=8) == "94287082"
    assert totp(secret, at=1111111109, digits=8) == "07081804"


class AuthServer(BaseHTTPRequestHandler):
    """/{mode}/fhir/.well-known/smart-configuration names /{mode}/authorize, which answers:
    refuse — the login page again with an error; json — 500 with JSON."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        posted = parse_qs(self.rfile.read(length).decode()) if length else {}
        url = urlsplit(self.path)
        mode = url.path.split("/")[1]
        root = f"http://{self.headers['host']}/{mode}"
        if url.path.endswith("smart-configuration"):
            self._send(200, json.dumps({
                "authorization_endpoint": f"{root}/authorize",
                "token_endpoint": f"{root}/token", "capabilities": [],
                "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"]}), "application/json")
        elif mode == "json":
            self._send(500, '{"error": "server_error"}', "application/json")
        else:
            page = LOGIN if posted else LOGIN.replace("Invalid username or password.", "")
            self._send(200, page.replace("/realms/r/login-actions/authenticate?execution=e1",
                                         f"/{mode}/authorize"), "text/html")

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def auth_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthServer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _launch(target: str) -> tuple[dict[str, tuple[str, str]], str]:
    options = Options(target=target, suites=("smart",), timeout=5, smart_user="ana",
                      smart_password="Secret-Password-1", smart_app_client_id="app",
                      smart_redirect_uri="https://app.example.org/cb")
    results = run(options)
    return ({r.test.id: (r.outcome, r.message) for r in results},
            write_json(results, options))


@pytest.mark.parametrize(("mode", "reason"), [
    ("refuse", "the login form came back after signing in (the page says: Invalid username"),
    ("json", "answered HTTP 500 (application/json)")])
def test_a_misbehaving_authorization_server_fails_the_launch(auth_base, mode, reason):
    outcomes, report = _launch(f"{auth_base}/{mode}/fhir")
    outcome, message = outcomes["smart-launch-01"]
    assert outcome == FAIL and reason in message, message
    for later in ("smart-launch-02", "smart-launch-03", "smart-launch-04", "smart-scope-01",
                  "smart-scope-02"):
        assert outcomes[later][0] == SKIP and "smart-launch" in outcomes[later][1]
    assert "Secret-Password-1" not in report
