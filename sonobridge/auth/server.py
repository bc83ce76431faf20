"""The OAuth 2 authorization server: authlib's grant logic, SMART's stricter rules.

authlib has no Starlette integration, so the HTTP edge (``auth/web.py``) reads the request
into a ``FormRequest`` and calls this synchronous server in a worker thread. What SMART App
Launch asks beyond authlib's defaults is added here:

- PKCE with S256 for every client at the authorization endpoint; ``plain`` refused;
- codes live 60 seconds, are consumed on first presentation, and carry the launch context;
- ``private_key_jwt`` client assertions: RS384/ES384 only, ``exp`` at most five minutes ahead,
  every ``jti`` remembered until it expires (authlib's assertion class accepts any algorithm
  and leaves the replay store to us);
- refresh tokens rotate, may narrow scopes (SMART scope semantics, not string equality), and
  ``online_access`` ones end with the login session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc6749.requests import OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from sonobridge.auth.accounts import Accounts, Client, User, digest
from sonobridge.auth.tokens import TokenRecord, Tokens
from sonobridge.core.scopes import ScopeError, is_within, parse_scope, split
from sonobridge.store.tables import auth_assertions as A
from sonobridge.store.tables import auth_codes as AC

CODE_SECONDS = 60
ASSERTION_MAX_SECONDS = 300
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class _Payload(OAuth2Payload):
    def __init__(self, data: dict[str, str], datalist: dict[str, list[str]]) -> None:
        self._data = data
        self._datalist = datalist

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


@dataclass
class Site:
    """Where this server is, as the request sees it (behind a proxy: the public URLs)."""

    root: str  # e.g. https://gw.example.org; the issuer
    ip: str = ""

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.root}/auth/token"


class FormRequest(OAuth2Request):
    """An OAuth 2 request read from Starlette. Transport security is the deployment's job (TLS at
    the listener or the proxy), so authlib's own https check is not run: behind a proxy it would
    see plain http and refuse every request."""

    def __init__(self, method: str, uri: str, headers: Any, args: list[tuple[str, str]],
                 form: list[tuple[str, str]], site: Site, json: Any = None) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self._body = None
        self.site = site
        self.json = json
        datalist: dict[str, list[str]] = {}
        for key, value in [*args, *form]:
            datalist.setdefault(key, []).append(value)
        self._args = {k: v for k, v in reversed(args)}
        self._form = {k: v for k, v in reversed(form)}
        self.payload = _Payload({k: v[0] for k, v in datalist.items()}, datalist)
        # Set by authlib as the request is validated: the client once authenticated (or, at
        # the authorization endpoint, found), the user once signed in, the grant presented.
        self.client: Client | None = None
        self.auth_method = None
        self.user: User | None = None
        self.authorization_code: AuthCode | None = None
        self.refresh_token: TokenRecord | None = None
        self.credential = None
        self._scope = None
        self.launch_context: dict[str, Any] = {}
        self.amr: list[str] = []
        self.session: str | None = None
        self.login_cookie = ""  # the login form's CSRF cookie (auth/web.py)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


@dataclass
class AuthCode:
    client_id: str
    user_id: int
    redirect_uri: str
    scope: str
    code_challenge: str
    context: dict[str, Any]
    nonce: str | None
    auth_time: int
    amr: list[str]
    code_challenge_method: str = "S256"
    extra: dict[str, Any] = field(default_factory=dict)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class S256Only(CodeChallenge):
    """PKCE for every client, S256 only (SMART App Launch 2.x)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with "
                                      "code_challenge_method=S256", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 (plain is refused)",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier' (PKCE is required)")
        super().validate_code_verifier(grant, result)


class _Issuing:
    """Token issue shared by the grants: the context comes from the code or the refresh
    token, the audience is this server's FHIR base."""

    request: FormRequest
    server: SmartServer
    GRANT_TYPE: str

    def generate_token(self, user: User | None = None, scope: str | None = None,
                       grant_type: str | None = None, expires_in: int | None = None,
                       include_refresh_token: bool = True) -> dict[str, Any]:
        request = self.request
        context: dict[str, Any] = {}
        nonce = None
        session = None
        if isinstance(request.authorization_code, AuthCode):
            context = dict(request.authorization_code.context)
            nonce = request.authorization_code.nonce
            session = request.authorization_code.extra.get("session")
        elif isinstance(request.refresh_token, TokenRecord):
            context = dict(request.refresh_token.context)
        assert request.client is not None, "authlib authenticates the client before issuing"
        return self.server.tokens.issue(
            client=request.client, user=user, scope=scope or "",
            audience=request.site.fhir_base, issuer=request.site.root, context=context,
            grant=grant_type or self.GRANT_TYPE, refresh=include_refresh_token,
            session=session, nonce=nonce)


class CodeGrant(_Issuing, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    AUTHORIZATION_CODE_LENGTH = 43

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        data = self.request.payload.data
        aud = data.get("aud")
        if aud is None:
            raise InvalidRequestError("'aud' is required: the FHIR base URL the token is for",
                                      redirect_uri=redirect_uri)
        if aud.rstrip("/") != self.request.site.fhir_base:
            raise InvalidRequestError(f"'aud' must be this server's FHIR base "
                                      f"{self.request.site.fhir_base}",
                                      redirect_uri=redirect_uri)
        try:
            for token in split(self.request.payload.scope):
                parse_scope(token)
        except ScopeError as exc:
            raise InvalidScopeError(str(exc), redirect_uri=redirect_uri) from None
        if not split(self.request.scope):
            raise InvalidScopeError("none of the requested scopes is allowed for this client",
                                    redirect_uri=redirect_uri)
        return redirect_uri

    def save_authorization_code(self, code: str, request: FormRequest) -> None:
        user, client = request.user, request.client
        assert user is not None and client is not None, \
            "a code is saved for the signed-in user and the client it was asked for"
        with self.server.accounts._tx() as conn:
            conn.execute(insert(AC).values(
                code_hash=digest(code), client_id=client.client_id, user_id=user.id,
                redirect_uri=request.payload.redirect_uri or "", scope=request.scope or "",
                code_challenge=request.payload.data.get("code_challenge", ""),
                context=orjson.dumps({**request.launch_context,
                                      "_session": request.session}),
                nonce=request.payload.data.get("nonce"), auth_time=int(time.time()),
                amr=" ".join(request.amr), expires=int(time.time()) + CODE_SECONDS))

    def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
        """Consume the code: it is deleted on first presentation, whatever happens next."""
        with self.server.accounts._tx() as conn:
            row = conn.execute(select(AC).where(AC.c.code_hash == digest(code))).first()
            if row is None:
                return None
            conn.execute(delete(AC).where(AC.c.code_hash == row.code_hash))
        if row.client_id != client.client_id or row.expires < time.time():
            return None
        context = orjson.loads(row.context)
        session = context.pop("_session", None)
        context["amr"] = row.amr.split()
        context["auth_time"] = row.auth_time
        return AuthCode(row.client_id, row.user_id, row.redirect_uri, row.scope,
                        row.code_challenge, context, row.nonce, row.auth_time, row.amr.split(),
                        extra={"session": session})

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        pass  # consumed when it was looked up

    def authenticate_user(self, authorization_code: AuthCode) -> User | None:
        user = self.server.accounts.user(user_id=authorization_code.user_id)
        return None if user is None or user.disabled else user


class RefreshGrant(_Issuing, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new refresh token

    def _validate_token_scope(self, token: TokenRecord) -> None:
        wanted = self.request.payload.scope
        if wanted and not is_within(wanted, token.scope):
            raise InvalidScopeError("a refresh may narrow the granted scopes, never widen them")

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        return self.server.tokens.by_refresh(refresh_token)

    def authenticate_user(self, refresh_token: TokenRecord) -> User | None:
        if refresh_token.user_id is None:
            return None
        user = self.server.accounts.user(user_id=refresh_token.user_id)
        return None if user is None or user.disabled else user

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        self.server.tokens.retire_refresh(refresh_token)


class BackendGrant(_Issuing, grants.ClientCredentialsGrant):
    """SMART Backend Services: ``system/`` scopes for a client, no user.

    Context scopes that need a user (``launch/patient``, ``openid``, ``offline_access``…) are
    left out of the grant rather than failing it (RFC 6749 §3.3 lets a server grant less than
    asked; the response's ``scope`` says what was granted): some clients, the Python
    ``fhirclient`` among them, add ``launch/patient`` to every request. ``patient/`` and
    ``user/`` scopes are refused.
    """

    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        scope = self.request.payload.scope
        if not scope:
            raise InvalidScopeError("scope is required (system/ scopes)")
        granted = []
        for token in split(scope):
            try:
                parsed = parse_scope(token)
            except ScopeError as exc:
                raise InvalidScopeError(str(exc)) from None
            if parsed is None:
                continue
            if parsed.context != "system":
                raise InvalidScopeError("a backend service may only ask for system/ scopes")
            granted.append(token)
        if not granted:
            raise InvalidScopeError("scope needs at least one system/ scope")
        client = self.request.client
        assert client is not None, "authlib authenticates the client before the scope"
        if not is_within(" ".join(granted), client.scope):
            raise InvalidScopeError("the requested scopes exceed what this client may have")
        self.request.scope = " ".join(granted)

    @hooked
    def create_token_response(self) -> tuple[int, Any, Any]:
        token = self.generate_token(scope=self.request.scope, include_refresh_token=False)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class PrivateKeyJwt:
    """``private_key_jwt`` client authentication (RFC 7523 §2.2, SMART Backend Services)."""

    def __init__(self, server: SmartServer) -> None:
        self.server = server
        self._jwks_cache: dict[str, tuple[float, KeySet]] = {}

    def __call__(self, query_client: Any, request: FormRequest) -> Client | None:
        form = request.form
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get(
                "client_assertion"):
            return None
        assertion = form["client_assertion"]
        try:
            header = jws.extract_compact(assertion.encode()).headers()
            unverified = orjson.loads(jws.extract_compact(assertion.encode()).payload)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="the client assertion is not a JWT") from exc
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(description="client assertions must be signed with "
                                     "RS384 or ES384")
        client_id = unverified.get("sub") if isinstance(unverified, dict) else None
        if not isinstance(client_id, str):
            raise InvalidClientError(description="the client assertion has no 'sub'")
        client = query_client(client_id)
        if client is None or client.client_type != "confidential-asymmetric":
            raise InvalidClientError(description="unknown client, or not an asymmetric one")
        try:
            claims = jwt.decode(assertion, self.key_set(client),
                                algorithms=ASSERTION_ALGORITHMS).claims
        except JoseError as exc:
            raise InvalidClientError(description="the client assertion's signature does not "
                                     "verify with the client's registered keys") from exc
        self.check_claims(claims, client, request)
        return client

    def check_claims(self, claims: dict[str, Any], client: Client, request: FormRequest) -> None:
        now = time.time()
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise InvalidClientError(description="'iss' and 'sub' must both be the client id")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if request.site.token_url not in audiences:
            raise InvalidClientError(description=f"'aud' must be the token endpoint "
                                     f"{request.site.token_url}")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise InvalidClientError(description="the client assertion has expired (or has "
                                     "no 'exp')")
        if exp > now + ASSERTION_MAX_SECONDS + 5:
            raise InvalidClientError(description="the client assertion's 'exp' is more than "
                                     "five minutes ahead")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > now + 60:
            raise InvalidClientError(description="the client assertion is not valid yet")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise InvalidClientError(description="the client assertion needs a 'jti'")
        form_client = request.form.get("client_id")
        if form_client and form_client != client.client_id:
            raise InvalidClientError(description="client_id does not match the assertion")
        with self.server.accounts._tx() as conn:
            conn.execute(delete(A).where(A.c.expires < int(now) - 60))
            try:
                conn.execute(insert(A).values(client_id=client.client_id, jti=jti,
                                              expires=int(exp)))
            except IntegrityError:
                raise InvalidClientError(description="this client assertion's 'jti' was "
                                         "already used") from None

    def key_set(self, client: Client) -> KeySet:
        if client.jwks is not None:
            # A JWKS as joserfc types it: the stored JSON's ``keys`` (all that it reads).
            return KeySet.import_key_set({"keys": client.jwks["keys"]})
        assert client.jwks_url is not None
        cached = self._jwks_cache.get(client.jwks_url)
        if cached and cached[0] > time.time():
            return cached[1]
        try:
            response = httpx.get(client.jwks_url, timeout=5.0, follow_redirects=False)
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise InvalidClientError(description="the client's JWKS URL could not be read"
                                     ) from exc
        self._jwks_cache[client.jwks_url] = (time.time() + 300, keys)
        return keys


class Introspection(IntrospectionEndpoint):
    """RFC 7662, with the SMART context fields. A client may introspect its own tokens; only
    a confidential client registered with the ``introspection`` scope (a resource server, by
    an administrator: ``sonobridge client add … --scope introspection``) may introspect
    others'. Anyone else learns ``{"active": false}``, as for an unknown token."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt",
                           "none"]
    server: SmartServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        tokens = self.server.tokens
        if token_type_hint != "refresh_token":
            claims = tokens.decode_any(token_string)
            if claims is not None:
                record = tokens.record(str(claims.get("jti")))
                return (record, claims) if record else None
        record = tokens.by_refresh(token_string)
        return (record, None) if record else None

    def check_permission(self, token: Any, client: Client, request: Any) -> bool:
        record = token[0]
        return record.client_id == client.client_id or (
            client.client_type != "public" and "introspection" in split(client.scope))

    def create_introspection_payload(self, token: Any) -> dict[str, Any]:
        if token is None:
            return {"active": False}
        record, claims = token
        if record.revoked or (claims is not None and claims.get("exp", 0) <= time.time()):
            return {"active": False}
        return self.introspect_token(token)

    def introspect_token(self, token: Any) -> dict[str, Any]:
        record, claims = token
        out: dict[str, Any] = {"active": True, "scope": record.scope,
                               "client_id": record.client_id, "token_type": "Bearer",
                               "exp": claims["exp"] if claims else record.refresh_expires}
        if claims:
            for key in ("sub", "aud", "iss", "iat", "jti", "fhirUser", "patient",
                        "encounter"):
                if key in claims:
                    out[key] = claims[key]
        if "fhirContext" in record.context:
            out["fhirContext"] = record.context["fhirContext"]
        if record.user_id is not None:
            user = self.server.accounts.user(user_id=record.user_id)
            if user is not None:
                out["username"] = user.username
        return out


class Revocation(RevocationEndpoint):
    """RFC 7009: the access token and its refresh token stop working at once."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt",
                           "none"]
    server: SmartServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        tokens = self.server.tokens
        claims = tokens.decode_any(token_string)
        if claims is not None:
            return tokens.record(str(claims.get("jti")))
        return tokens.by_refresh(token_string)

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        self.server.tokens.revoke(token.jti)


class Registration(ClientRegistrationEndpoint):
    """RFC 7591 dynamic registration. Anyone may register; nobody gets a token until an
    administrator approves the client (``sonobridge client approve``)."""

    server: SmartServer

    def create_registration_response(self, request: Any) -> tuple[int, dict[str, Any], Any]:
        metadata = self.extract_client_metadata(request)
        method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
        kind = {"none": "public", "client_secret_basic": "confidential-symmetric",
                "client_secret_post": "confidential-symmetric",
                "private_key_jwt": "confidential-asymmetric"}.get(method)
        if kind is None:
            raise InvalidRequestError(f"token_endpoint_auth_method {method} is not supported")
        asked = split(str(metadata.get("scope") or ""))
        if kind == "public" and any(s.startswith("system/") for s in asked):
            raise InvalidRequestError("a public client cannot hold system/ scopes: it has no "
                                      "secret to prove it is the backend service it claims")
        if "introspection" in asked:
            raise InvalidRequestError("the introspection scope is given by an administrator, "
                                      "not registered")
        from sonobridge.auth.accounts import AccountError

        try:
            client, secret = self.server.accounts.add_client(
                str(metadata.get("client_name") or "unnamed application"), kind,
                str(metadata.get("scope") or ""), redirect_uris=metadata.get("redirect_uris"),
                jwks=metadata.get("jwks"), jwks_url=metadata.get("jwks_uri"), approved=False)
        except (AccountError, ValueError) as exc:
            raise InvalidRequestError(str(exc)) from None
        body = {**metadata, "client_id": client.client_id,
                "client_id_issued_at": int(time.time()), "token_endpoint_auth_method": method}
        if secret:
            body["client_secret"] = secret
            body["client_secret_expires_at"] = 0
        return 201, body, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration; approval is the gate

    def get_server_metadata(self) -> dict[str, Any]:
        return {"token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                                                          "client_secret_post", "none"],
                "grant_types_supported": ["authorization_code", "refresh_token",
                                          "client_credentials"],
                "response_types_supported": ["code"]}

    def resolve_public_key(self, request: Any) -> None:
        return None


class SmartServer(AuthorizationServer):
    """authlib's AuthorizationServer over our accounts and tokens; responses are tuples the
    web edge turns into Starlette responses."""

    def __init__(self, accounts: Accounts, tokens: Tokens) -> None:
        super().__init__()
        self.accounts = accounts
        self.tokens = tokens
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshGrant)
        self.register_grant(BackendGrant)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.register_endpoint(Introspection)
        self.register_endpoint(Revocation)
        self.register_endpoint(Registration)

    def query_client(self, client_id: str) -> Client | None:
        client = self.accounts.client(client_id)
        if client is None or client.revoked:
            return None
        if not client.approved:
            raise InvalidClientError(description="this client is waiting for an administrator "
                                     "to approve it")
        return client

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        pass  # stored when issued (Tokens.issue)

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token"
                            ) -> Client:
        client = super().authenticate_client(request, methods, endpoint)
        if request.auth_method == "none" and client.client_type != "public":
            raise InvalidClientError(description="a confidential client must authenticate")
        return client

    def create_oauth2_request(self, request: Any) -> FormRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        request.payload = _Payload(request.json if isinstance(request.json, dict) else {}, {})
        return request

    def handle_response(self, status: int, body: Any, headers: Any
                        ) -> tuple[int, Any, list[tuple[str, str]]]:
        out = [(k, v) for k, v in (headers.items() if isinstance(headers, dict) else headers)]
        return status, body, out

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

