"""The OAuth 2 / SMART HTTP edge: discovery, JWKS, authorize (login, consent, patient picker),
token, introspect, revoke, register, logout.

Requests are read here (async), then the synchronous authlib server runs in a worker thread;
its ``(status, body, headers)`` answers become Starlette responses.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
import orjson
from authlib.oauth2.rfc6749.errors import OAuth2Error
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sonobridge.auth.accounts import User
from sonobridge.auth.guard import site_of
from sonobridge.auth.pages import consent_page, error_page, language, login_page, logout_page
from sonobridge.auth.server import FormRequest, Site
from sonobridge.auth.service import AuthService
from sonobridge.core.scopes import split

COOKIE = "sonobridge_session"
# Login CSRF: the login form carries the value of this cookie, set with the form; a form posted
# from another site has no way to know it (double-submit cookie, SameSite=Strict).
LOGIN_COOKIE = "sonobridge_login"
FORM = "application/x-www-form-urlencoded"
MAX_FORM = 64 * 1024
# Fields of our own forms, never passed on to the OAuth request.
_OWN_FIELDS = {"_action", "_csrf", "_login", "username", "password", "otp", "patient",
               "patient_id"}
_CORS = {"Access-Control-Allow-Origin": "*",
         "Access-Control-Allow-Headers": "Authorization, Content-Type",
         "Access-Control-Allow-Methods": "GET, POST, OPTIONS"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The login and consent pages: never framed, no scripts, forms post only to this server.
_PAGE = {"X-Frame-Options": "DENY", "Content-Security-Policy":
         "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
         "frame-ancestors 'none'; base-uri 'none'", "Referrer-Policy": "no-referrer"}
SMART_STYLE = {"color_background": "#f4f7fa", "color_error": "#a40000",
               "color_highlight": "#00629b", "color_modal_backdrop": "",
               "color_success": "#2e7d32", "color_text": "#1d2a35",
               "dim_border_radius": "4px", "dim_font_size": "14px", "dim_spacing_size": "16px",
               "font_family_body": "system-ui, sans-serif",
               "font_family_heading": "system-ui, sans-serif"}

# (patient id, label) pairs the user may pick from, and whether the user may pick a patient id
# (it exists, and the user's role may read patients): the core's answers, given by the app.
PatientLookup = Callable[[User], list[tuple[str, str]]]
PatientExists = Callable[[User, str], bool]
# (kind, outcome ok?, user, client id, site, detail) -> None: the audit trail's hook.
AuthAudit = Callable[[str, bool, "User | None", str, Site, dict[str, Any]], None]


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        self.status, self.error, self.description = status, error, description


def csrf_for(session: str) -> str:
    return hashlib.sha256(b"csrf:" + session.encode()).hexdigest()[:32]


class AuthWeb:
    def __init__(self, auth: AuthService, configured_base: str | None, *,
                 patients: PatientLookup, patient_exists: PatientExists,
                 audit: AuthAudit | None = None) -> None:
        self.auth = auth
        self.configured_base = configured_base
        self.patients = patients
        self.patient_exists = patient_exists
        self.audit = audit or (lambda *args: None)

    def routes(self) -> list[Route]:
        return [
            Route("/fhir/.well-known/smart-configuration", self.smart_configuration,
                  methods=["GET", "HEAD", "OPTIONS"]),
            Route("/.well-known/openid-configuration", self.openid_configuration,
                  methods=["GET", "HEAD", "OPTIONS"]),
            Route("/auth/jwks", self.jwks, methods=["GET", "HEAD", "OPTIONS"]),
            Route("/auth/smart-style.json", self.style, methods=["GET", "HEAD", "OPTIONS"]),
            Route("/auth/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/auth/token", self.token, methods=["POST", "OPTIONS"]),
            Route("/auth/introspect", self.introspect, methods=["POST", "OPTIONS"]),
            Route("/auth/revoke", self.revoke, methods=["POST", "OPTIONS"]),
            Route("/auth/register", self.register, methods=["POST", "OPTIONS"]),
            Route("/auth/logout", self.logout, methods=["GET", "POST"]),
        ]

    def _site(self, request: Request) -> Site:
        return site_of(request.scope, self.configured_base)

    # ------------------------------------------------------------------ discovery

    async def smart_configuration(self, request: Request) -> Response:
        return _json(self.auth.smart_configuration(self._site(request)), request)

    async def openid_configuration(self, request: Request) -> Response:
        return _json(self.auth.openid_configuration(self._site(request)), request)

    async def jwks(self, request: Request) -> Response:
        keys = await anyio.to_thread.run_sync(self.auth.keys.jwks)
        return _json(keys, request)

    async def style(self, request: Request) -> Response:
        return _json(SMART_STYLE, request)

    # ------------------------------------------------------------------ token-side endpoints

    async def _form(self, request: Request) -> list[tuple[str, str]]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != FORM:
            raise OAuthError(400, "invalid_request", f"the body must be {FORM}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise OAuthError(413, "invalid_request", "the request body is too large")
        try:
            return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise OAuthError(400, "invalid_request", "the body is not UTF-8") from None

    async def _endpoint(self, request: Request, run: Callable[[FormRequest], Any],
                        kind: str) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=_CORS)
        try:
            if kind == "register":
                try:
                    data = orjson.loads(await request.body())
                except orjson.JSONDecodeError:
                    raise OAuthError(400, "invalid_client_metadata",
                                     "the body is not JSON") from None
                if not isinstance(data, dict):
                    raise OAuthError(400, "invalid_client_metadata",
                                     "the body must be a JSON object")
                form: list[tuple[str, str]] = []
            else:
                data = None
                form = await self._form(request)
        except OAuthError as exc:
            return _oauth_error(exc.status, exc.error, exc.description)
        site = self._site(request)
        oreq = FormRequest("POST", str(request.url), request.headers, [], form, site, json=data)
        status, body, headers = await anyio.to_thread.run_sync(self._call, run, oreq, kind)
        out = {**dict(headers), **_NO_STORE, **_CORS}
        out.pop("Content-Type", None)
        if isinstance(body, dict):
            return JSONResponse(body, status, out)
        return Response(body or b"", status, out)

    def _call(self, run: Callable[[FormRequest], Any], oreq: FormRequest, kind: str
              ) -> tuple[int, Any, list[tuple[str, str]]]:
        status, body, headers = run(oreq)
        client = oreq.client.client_id if oreq.client is not None else \
            oreq.form.get("client_id", "")
        ok = status < 400
        detail: dict[str, Any] = {}
        if kind == "token":
            detail = {"grant_type": oreq.form.get("grant_type", ""),
                      "scope": body.get("scope", "") if ok and isinstance(body, dict) else ""}
            if not ok and isinstance(body, dict):
                detail["error"] = body.get("error", "")
            if ok and isinstance(body, dict) and body.get("patient"):
                detail["patient"] = body["patient"]
        self.audit(kind, ok, oreq.user if isinstance(oreq.user, User) else None, client,
                   oreq.site, detail)
        return status, body, headers

    async def token(self, request: Request) -> Response:
        return await self._endpoint(request, self.auth.server.create_token_response, "token")

    async def introspect(self, request: Request) -> Response:
        return await self._endpoint(
            request, lambda r: self.auth.server.create_endpoint_response("introspection", r),
            "introspect")

    async def revoke(self, request: Request) -> Response:
        return await self._endpoint(
            request, lambda r: self.auth.server.create_endpoint_response("revocation", r),
            "revoke")

    async def register(self, request: Request) -> Response:
        return await self._endpoint(
            request, lambda r: self.auth.server.create_endpoint_response("client_registration",
                                                                         r),
            "register")

    # ------------------------------------------------------------------ authorize

    async def authorize(self, request: Request) -> Response:
        params = list(request.query_params.multi_items())
        if request.method == "POST":
            try:
                params = await self._form(request)
            except OAuthError as exc:
                return HTMLResponse(error_page("en", exc.error, exc.description), exc.status)
        own = {k: v for k, v in params if k in _OWN_FIELDS}
        oauth = [(k, v) for k, v in params if k not in _OWN_FIELDS]
        lang = language(dict(oauth).get("ui_locales"), request.headers.get("accept-language"))
        site = self._site(request)
        oreq = FormRequest("GET", str(request.url), request.headers, oauth, [], site)
        session = request.cookies.get(COOKIE)
        oreq.login_cookie = request.cookies.get(LOGIN_COOKIE) or ""
        result = await anyio.to_thread.run_sync(self._authorize, oreq, own, session, lang,
                                                request.method == "POST")
        return result

    def _authorize(self, oreq: FormRequest, own: dict[str, str], session: str | None,
                   lang: str, posted: bool) -> Response:
        server = self.auth.server
        accounts = self.auth.accounts
        try:
            grant = server.get_consent_grant(oreq)
        except OAuth2Error as error:
            return self._authorize_error(oreq, error, lang)
        client = oreq.client
        assert client is not None, "the consent grant has found the client"
        site = oreq.site
        action = own.get("_action") if posted else None
        new_session = None
        live = accounts.session(session)
        if action == "login" and not (oreq.login_cookie and secrets.compare_digest(
                own.get("_login", ""), oreq.login_cookie)):
            # Posted without the form's own token: another site's form, or an expired one.
            return self._login(oreq, lang, "stale", own.get("username", ""))
        if action == "login":
            username = own.get("username", "")
            result = accounts.login(username, own.get("password", ""), own.get("otp"),
                                    source=site.ip)
            self.audit("login", result.user is not None, result.user, client.client_id, site,
                       {"username": username[:64], "reason": result.error or ""})
            if result.user is None:
                return self._login(oreq, lang, result.error, username)
            amr = ["pwd", "otp"] if result.user.totp else ["pwd"]
            new_session = accounts.open_session(result.user, amr)
            live = (result.user, amr)
            session = new_session
            action = None
        elif live is None:
            return self._login(oreq, lang, "session" if session and posted else None)
        assert live is not None and session is not None
        user, amr = live
        scopes = split(oreq.scope)
        context: dict[str, Any] = {}
        launch = oreq.payload.data.get("launch")
        if "launch" in scopes:
            found = accounts.launch(launch or "", user) if launch else None
            if found is None:
                refusal = OAuth2Error("the launch parameter is missing, unknown or expired",
                                      redirect_uri=grant.redirect_uri)
                refusal.error = "invalid_request"
                return self._authorize_error(oreq, refusal, lang)
            context.update(found)
            context["need_patient_banner"] = False
        needs_patient = "patient" not in context and (
            "launch/patient" in scopes or any(s.startswith("patient/") for s in scopes))
        csrf = csrf_for(session)
        error_key = None
        if action in ("allow", "deny") and secrets.compare_digest(own.get("_csrf", ""), csrf):
            if action == "deny":
                response = server.create_authorization_response(oreq, grant_user=None,
                                                                grant=grant)
                return self._finish(response, new_session, site)
            if needs_patient:
                patient = (own.get("patient_id") or own.get("patient") or "").strip()
                if patient and self.patient_exists(user, patient):
                    context["patient"] = patient
                    context["need_patient_banner"] = True
                else:
                    error_key = "no-patient"
            if error_key is None and "launch" in scopes and \
                    accounts.launch(launch or "", user, take=True) is None:
                refusal = OAuth2Error("the launch was used already",
                                      redirect_uri=grant.redirect_uri)
                refusal.error = "invalid_request"
                return self._authorize_error(oreq, refusal, lang)
            if error_key is None:
                context.setdefault("need_patient_banner", False)
                context["smart_style_url"] = f"{site.root}/auth/smart-style.json"
                oreq.launch_context = context
                oreq.amr = amr
                oreq.session = session
                response = server.create_authorization_response(oreq, grant_user=user,
                                                                grant=grant)
                return self._finish(response, new_session, site)
        patients = self.patients(user) if needs_patient else None
        page = consent_page(lang, "/auth/authorize", list(oreq.payload.data.items()), csrf,
                            client.name, user.username, scopes, patients, error_key)
        return self._finish((200, page, [("Content-Type", "text/html; charset=utf-8")]),
                            new_session, site)

    def _login(self, oreq: FormRequest, lang: str, error: str | None, username: str = ""
               ) -> Response:
        token = oreq.login_cookie or secrets.token_urlsafe(24)
        page = login_page(lang, "/auth/authorize", list(oreq.payload.data.items()), error,
                          username, token)
        response = HTMLResponse(page, 200, headers={**_NO_STORE, **_PAGE})
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                            secure=oreq.site.root.startswith("https://"), path="/auth")
        return response

    def _authorize_error(self, oreq: FormRequest, error: OAuth2Error, lang: str) -> Response:
        error.state = oreq.payload.state
        if error.redirect_uri:
            params = [("error", error.error or "invalid_request")]
            if error.description:
                params.append(("error_description", error.description))
            if oreq.payload.state:
                params.append(("state", oreq.payload.state))
            sep = "&" if "?" in error.redirect_uri else "?"
            return RedirectResponse(f"{error.redirect_uri}{sep}{urlencode(params)}", 302)
        return HTMLResponse(error_page(lang, error.error or "invalid_request",
                                       error.description or ""), 400, headers=_NO_STORE)

    def _finish(self, answer: tuple[int, Any, list[tuple[str, str]]], new_session: str | None,
                site: Site) -> Response:
        status, body, headers = answer
        out = {**dict(headers), **_NO_STORE, **_PAGE}
        response = Response(body if isinstance(body, str | bytes) else b"", status, out)
        if new_session:
            response.set_cookie(COOKIE, new_session, httponly=True, samesite="lax",
                                secure=site.root.startswith("https://"), path="/auth")
        return response

    async def logout(self, request: Request) -> Response:
        if request.method == "GET":  # a page with the button; only the POST signs out
            lang = language(None, request.headers.get("accept-language"))
            return HTMLResponse(logout_page(lang), 200, headers={**_NO_STORE, **_PAGE})
        session = request.cookies.get(COOKIE)
        live = await anyio.to_thread.run_sync(self.auth.accounts.session, session)
        await anyio.to_thread.run_sync(self.auth.accounts.close_session, session)
        if live is not None:
            self.audit("logout", True, live[0], "", self._site(request), {})
        response = HTMLResponse(error_page("en", "signed out", "You are signed out."), 200,
                                headers=_NO_STORE)
        response.delete_cookie(COOKIE, path="/auth")
        return response


def _json(body: Any, request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=_CORS)
    return JSONResponse(body, headers=_CORS)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status,
                        {**_NO_STORE, **_CORS})
