"""Users, client applications, login sessions and EHR launch handles, kept in the database.

Secrets never stored in the clear: passwords as argon2 hashes, client secrets, session cookies
and launch handles as SHA-256 digests of random tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select, update

from sonobridge.auth.passwords import (
    check_policy,
    hash_password,
    totp_step,
    verify_password,
)
from sonobridge.auth.secrets import SecretBox
from sonobridge.auth.throttle import Throttle
from sonobridge.core.roles import ROLES, TWO_FACTOR_ROLES
from sonobridge.core.scopes import ScopeError, parse_scope, split
from sonobridge.store.tables import auth_clients as C
from sonobridge.store.tables import auth_launches as L
from sonobridge.store.tables import auth_sessions as S
from sonobridge.store.tables import auth_tokens as T
from sonobridge.store.tables import auth_users as U

CLIENT_TYPES = ("public", "confidential-symmetric", "confidential-asymmetric")
LAUNCH_SECONDS = 300


class AccountError(ValueError):
    """A request about users or clients that cannot be done; the message says why."""


def check_redirect_uri(uri: str) -> None:
    """https, http to a loopback host (native and development apps), or a private-use scheme
    (``com.example.app:/cb``, RFC 8252); never a fragment."""
    parts = urlsplit(uri)
    loopback = parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")
    private = "." in parts.scheme and parts.scheme not in ("http", "https")
    if not (parts.scheme == "https" and parts.hostname) and not loopback and not private:
        raise AccountError(f"redirect URI {uri!r} must be https, loopback http or a "
                           "private-use scheme")
    if parts.fragment or "#" in uri:
        raise AccountError(f"redirect URI {uri!r} may not have a fragment")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    fhir_user: str | None
    totp: bool
    disabled: bool

    @property
    def needs_totp(self) -> bool:
        return self.role in TWO_FACTOR_ROLES


@dataclass(frozen=True)
class Client:
    """A registered application; the methods authlib asks of a client (``ClientMixin``)."""

    client_id: str
    name: str
    client_type: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    scope: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    approved: bool
    revoked: bool
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- authlib ClientMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have; unknown ones are dropped here and
        refused by name in ``CodeGrant.validate_authorization_request`` (invalid_scope)."""
        from sonobridge.core.scopes import is_within

        allowed = []
        for token in split(scope):
            try:
                if is_within(token, self.scope):
                    allowed.append(token)
            except ScopeError:
                continue
        return " ".join(allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, as OAuth 2.1 requires

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return secrets.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        allowed = {"public": {"none"},
                   "confidential-symmetric": {"client_secret_basic", "client_secret_post"},
                   "confidential-asymmetric": {"private_key_jwt"}}[self.client_type]
        return method in allowed

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.client_type == "confidential-asymmetric" or (
                self.client_type == "confidential-symmetric" and not self.redirect_uris)
        if grant_type in ("authorization_code", "refresh_token"):
            return bool(self.redirect_uris)
        return False

    @property
    def usable(self) -> bool:
        return self.approved and not self.revoked


def _user(row: Any) -> User:
    return User(row.id, row.username, row.role, row.fhir_user, row.totp_secret is not None,
                bool(row.disabled))


def _client(row: Any) -> Client:
    return Client(row.client_id, row.name, row.client_type, row.secret_hash,
                  tuple(orjson.loads(row.redirect_uris)), row.scope,
                  orjson.loads(row.jwks) if row.jwks else None, row.jwks_url,
                  bool(row.approved), bool(row.revoked))


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    error: str | None = None  # "credentials", "wait", "otp", "otp-required", "disabled"
    wait: int = 0  # seconds, for "wait"


class Accounts:
    """Everything about users, clients, sessions and launches, over one engine."""

    def __init__(self, engine: Engine, *, session_idle: int = 900,
                 secrets: SecretBox | None = None) -> None:
        self.engine = engine
        self.session_idle = session_idle
        self.throttle = Throttle()
        self.secrets = secrets or SecretBox(None)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------ users

    def add_user(self, username: str, role: str, password: str, fhir_user: str | None = None
                 ) -> User:
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not username or len(username) > 64 or not username.replace(".", "").replace(
                "-", "").replace("_", "").replace("@", "").isalnum():
            raise AccountError("a user name is 1-64 letters, digits and . - _ @")
        check_policy(password, username)
        if fhir_user and not fhir_user.startswith(("Practitioner/", "PractitionerRole/",
                                                    "Patient/", "RelatedPerson/")):
            raise AccountError("fhirUser must be a Practitioner, PractitionerRole, Patient or "
                               "RelatedPerson reference")
        now = int(time.time())
        with self._tx() as conn:
            if conn.execute(select(U.c.id).where(U.c.username == username)).first():
                raise AccountError(f"user {username!r} already exists")
            conn.execute(insert(U).values(
                username=username, password_hash=hash_password(password), role=role,
                fhir_user=fhir_user, totp_secret=None, totp_last_step=None, disabled=False,
                failed_logins=0, locked_until=None, password_changed=now, created=now))
            row = conn.execute(select(U).where(U.c.username == username)).one()
        return _user(row)

    def user(self, username: str | None = None, user_id: int | None = None) -> User | None:
        where = U.c.username == username if username is not None else U.c.id == user_id
        with self.engine.connect() as conn:
            row = conn.execute(select(U).where(where)).first()
        return _user(row) if row else None

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(U).order_by(U.c.username))]

    def _need(self, conn: Connection, username: str) -> Any:
        row = conn.execute(select(U).where(U.c.username == username)).first()
        if row is None:
            raise AccountError(f"no user {username!r}")
        return row

    def set_password(self, username: str, password: str) -> None:
        check_policy(password, username)
        with self._tx() as conn:
            row = self._need(conn, username)
            conn.execute(update(U).where(U.c.id == row.id).values(
                password_hash=hash_password(password), password_changed=int(time.time()),
                failed_logins=0, locked_until=None))

    def set_totp(self, username: str, secret: str | None) -> None:
        with self._tx() as conn:
            row = self._need(conn, username)
            sealed = self.secrets.seal(secret) if secret is not None else None
            conn.execute(update(U).where(U.c.id == row.id).values(totp_secret=sealed,
                                                                  totp_last_step=None))

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disabling a user also ends their sessions and revokes their tokens."""
        with self._tx() as conn:
            row = self._need(conn, username)
            conn.execute(update(U).where(U.c.id == row.id).values(disabled=disabled))
            if disabled:
                conn.execute(delete(S).where(S.c.user_id == row.id))
                conn.execute(update(T).where(T.c.user_id == row.id, T.c.revoked.is_(False))
                             .values(revoked=True, revoked_at=int(time.time() * 1000)))

    def login(self, username: str, password: str, otp: str | None, now: float | None = None,
              source: str = "") -> LoginResult:
        """Check a login. Failures slow the next tries from the same address down (and, past
        many, from anywhere: ``throttle.py``) instead of locking the account; while a name
        must wait, every answer is the same, whether it exists or not."""
        now = time.time() if now is None else now
        wait = self.throttle.wait(username, source)
        if wait > 0:
            return LoginResult(None, "wait", int(wait) + 1)
        result = self._check(username, password, otp, now)
        if result.error in ("credentials", "otp"):
            self.throttle.failed(username, source)
        elif result.user is not None:
            self.throttle.succeeded(username, source)
        return result

    def _check(self, username: str, password: str, otp: str | None, now: float) -> LoginResult:
        with self._tx() as conn:
            row = conn.execute(select(U).where(U.c.username == username[:64])).first()
            if row is None:
                verify_password(None, password)  # same time as a real check
                return LoginResult(None, "credentials")
            if not verify_password(row.password_hash, password):
                return LoginResult(None, "credentials")
            if row.disabled:
                return LoginResult(None, "disabled")
            user = _user(row)
            if row.totp_secret is None and user.needs_totp:
                return LoginResult(None, "otp-setup")  # an administrator must enrol TOTP first
            if row.totp_secret is not None:
                if not otp:
                    return LoginResult(None, "otp-required")
                step = totp_step(self.secrets.reveal(row.totp_secret), otp,
                                 row.totp_last_step, now)
                if step is None:
                    return LoginResult(None, "otp")
                conn.execute(update(U).where(U.c.id == row.id).values(totp_last_step=step))
        return LoginResult(user)

    # ------------------------------------------------------------------ sessions

    def open_session(self, user: User, amr: list[str]) -> str:
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        with self._tx() as conn:
            conn.execute(insert(S).values(session_hash=digest(token), user_id=user.id,
                                          amr=" ".join(amr), created=now, last_seen=now))
        return token

    def session(self, token: str | None) -> tuple[User, list[str]] | None:
        """The user of a live session (touching it), or ``None`` when idle too long."""
        if not token:
            return None
        now = int(time.time())
        with self._tx() as conn:
            row = conn.execute(select(S).where(S.c.session_hash == digest(token))).first()
            if row is None:
                return None
            if now - row.last_seen > self.session_idle:
                conn.execute(delete(S).where(S.c.session_hash == row.session_hash))
                return None
            conn.execute(update(S).where(S.c.session_hash == row.session_hash)
                         .values(last_seen=now))
            user_row = conn.execute(select(U).where(U.c.id == row.user_id)).first()
        if user_row is None or user_row.disabled:
            return None
        return _user(user_row), row.amr.split()

    def close_session(self, token: str | None) -> None:
        if token:
            with self._tx() as conn:
                conn.execute(delete(S).where(S.c.session_hash == digest(token)))

    # ------------------------------------------------------------------ launches

    def create_launch(self, context: dict[str, Any], user: User | None = None) -> str:
        """An EHR launch handle bound to a patient (and optionally an encounter or study)."""
        handle = secrets.token_urlsafe(24)
        with self._tx() as conn:
            conn.execute(insert(L).values(launch=digest(handle),
                                          user_id=user.id if user else None,
                                          context=orjson.dumps(context),
                                          expires=int(time.time()) + LAUNCH_SECONDS))
        return handle

    def launch(self, handle: str, user: User, *, take: bool = False) -> dict[str, Any] | None:
        """The context of a launch handle for this user. A handle is used once: ``take``
        (when the authorization is granted) deletes it, so a handle seen in a log or a
        browser history cannot start a second session."""
        with self._tx() as conn:
            row = conn.execute(select(L).where(L.c.launch == digest(handle))).first()
            if row is None or row.expires < time.time():
                return None
            if row.user_id is not None and row.user_id != user.id:
                return None
            if take and conn.execute(delete(L).where(L.c.launch == row.launch)).rowcount != 1:
                return None  # another request took it first
        context: dict[str, Any] = orjson.loads(row.context)
        return context

    # ------------------------------------------------------------------ clients

    def add_client(self, name: str, client_type: str, scope: str, *,
                   redirect_uris: list[str] | None = None, jwks: dict[str, Any] | None = None,
                   jwks_url: str | None = None, approved: bool = True
                   ) -> tuple[Client, str | None]:
        """Register a client; returns it and, for a symmetric client, its secret (shown once)."""
        if client_type not in CLIENT_TYPES:
            raise AccountError(f"client type must be one of {', '.join(CLIENT_TYPES)}")
        redirect_uris = list(redirect_uris or [])
        for uri in redirect_uris:
            check_redirect_uri(uri)
        if client_type == "public" and not redirect_uris:
            raise AccountError("a public client needs at least one --redirect-uri")
        if client_type == "confidential-asymmetric" and not (jwks or jwks_url):
            raise AccountError("an asymmetric client needs --jwks-file or --jwks-url")
        if jwks is not None and not isinstance(jwks.get("keys"), list):
            raise AccountError("the JWKS must be an object with a 'keys' list")
        for token in split(scope):
            try:
                parse_scope(token)
            except ScopeError as exc:
                raise AccountError(str(exc)) from None
        if not split(scope):
            raise AccountError("a client needs at least one allowed scope")
        client_id = secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32) if client_type == "confidential-symmetric" else None
        with self._tx() as conn:
            conn.execute(insert(C).values(
                client_id=client_id, name=name[:128], client_type=client_type,
                secret_hash=digest(secret) if secret else None,
                redirect_uris=orjson.dumps(redirect_uris), scope=" ".join(split(scope)),
                jwks=orjson.dumps(jwks) if jwks else None, jwks_url=jwks_url,
                approved=approved, revoked=False, created=int(time.time())))
            row = conn.execute(select(C).where(C.c.client_id == client_id)).one()
        return _client(row), secret

    def client(self, client_id: str | None) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(C).where(C.c.client_id == client_id)).first()
        return _client(row) if row else None

    def clients(self) -> list[Client]:
        with self.engine.connect() as conn:
            return [_client(r) for r in conn.execute(select(C).order_by(C.c.created))]

    def set_client(self, client_id: str, *, approved: bool | None = None,
                   revoked: bool | None = None) -> Client:
        values: dict[str, Any] = {}
        if approved is not None:
            values["approved"] = approved
        if revoked is not None:
            values["revoked"] = revoked
        with self._tx() as conn:
            found = conn.execute(update(C).where(C.c.client_id == client_id).values(**values))
            if found.rowcount == 0:
                raise AccountError(f"no client {client_id!r}")
            if revoked:
                conn.execute(update(T).where(T.c.client_id == client_id,
                                             T.c.revoked.is_(False))
                             .values(revoked=True, revoked_at=int(time.time() * 1000)))
            row = conn.execute(select(C).where(C.c.client_id == client_id)).one()
        return _client(row)

