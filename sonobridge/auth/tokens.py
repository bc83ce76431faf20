"""Access tokens (signed JWTs), refresh tokens and ID tokens: issue, check, revoke.

An access token carries everything the policy needs (scopes, patient, role, fhirUser), so a
request is authorised without a database read. Revocation must still act at once: revoked
token ids are kept in memory, added immediately in this process and picked up from the
database by every other process within a second (``sync``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Connection, Engine, delete, insert, select, update

from sonobridge.auth.accounts import Client, User, digest
from sonobridge.auth.keys import ALGORITHM, KeyStore
from sonobridge.core.scopes import split
from sonobridge.store.tables import auth_sessions as S
from sonobridge.store.tables import auth_tokens as T

_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """The bearer token cannot be used; the message is safe to show (RFC 6750 error_description)."""


@dataclass(frozen=True)
class TokenRecord:
    """A stored grant: one access token and, maybe, the refresh token that renews it."""

    jti: str
    client_id: str
    user_id: int | None
    scope: str
    context: dict[str, Any]
    expires: int
    refresh_expires: int | None
    revoked: bool
    grant: str
    session_hash: str | None

    # ---- what authlib asks of a token (TokenMixin)
    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, self.expires - int(time.time()))

    def is_expired(self) -> bool:
        return self.expires <= time.time()

    def is_revoked(self) -> bool:
        return self.revoked


def _record(row: Any) -> TokenRecord:
    return TokenRecord(row.jti, row.client_id, row.user_id, row.scope,
                       orjson.loads(row.context), row.expires, row.refresh_expires,
                       bool(row.revoked), row.grant, row.session_hash)


_LEEWAY = 30  # seconds of clock difference allowed on ``nbf``


class Tokens:
    def __init__(self, engine: Engine, keys: KeyStore, *, lifetime: int, refresh_lifetime: int,
                 session_idle: int) -> None:
        self.engine = engine
        self.keys = keys
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime
        self.session_idle = session_idle
        self._revoked: set[str] = set()
        self._synced_ms = 0
        self._sync_lock = threading.Lock()
        self._valid: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------ issue

    def issue(self, *, client: Client, user: User | None, scope: str, audience: str,
              issuer: str, context: dict[str, Any], grant: str, refresh: bool,
              session: str | None = None, nonce: str | None = None) -> dict[str, Any]:
        """Mint an access token (and a refresh token, and an ID token when ``openid`` was
        granted to a user), store the grant, and return the token response body."""
        now = int(time.time())
        jti = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": issuer, "aud": audience, "iat": now, "exp": now + self.lifetime, "jti": jti,
            "sub": str(user.id) if user else client.client_id, "client_id": client.client_id,
            "scope": scope,
        }
        if user is not None:
            claims["role"] = user.role
            if user.fhir_user:
                claims["fhirUser"] = user.fhir_user
        for key in ("patient", "encounter"):
            if context.get(key):
                claims[key] = context[key]
        signing = self.keys.current()
        access = jwt.encode({"alg": ALGORITHM, "kid": signing.kid, "typ": "at+jwt"}, claims,
                            signing.key)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "expires_in": self.lifetime, "scope": scope}
        for key in ("patient", "encounter", "fhirContext", "need_patient_banner",
                    "smart_style_url"):
            if key in context:
                body[key] = context[key]
        refresh_token = refresh_hash = refresh_expires = None
        granted = set(split(scope))
        if refresh and user is not None and granted & {"offline_access", "online_access"}:
            refresh_token = secrets.token_urlsafe(32)
            refresh_hash = digest(refresh_token)
            refresh_expires = now + self.refresh_lifetime
            body["refresh_token"] = refresh_token
        if user is not None and "openid" in granted:
            body["id_token"] = self.id_token(user, client, issuer, audience, context, nonce, now)
        with self._tx() as conn:
            conn.execute(insert(T).values(
                jti=jti, client_id=client.client_id, user_id=user.id if user else None,
                scope=scope, context=orjson.dumps(context), refresh_hash=refresh_hash,
                refresh_expires=refresh_expires, expires=now + self.lifetime, issued=now,
                revoked=False, grant=grant, revoked_at=None,
                session_hash=digest(session) if session and "online_access" in granted
                and "offline_access" not in granted else None))
        return body

    def id_token(self, user: User, client: Client, issuer: str, fhir_base: str,
                 context: dict[str, Any], nonce: str | None, now: int) -> str:
        claims: dict[str, Any] = {"iss": issuer, "sub": str(user.id), "aud": client.client_id,
                                  "iat": now, "exp": now + self.lifetime,
                                  "auth_time": context.get("auth_time", now),
                                  "amr": context.get("amr", ["pwd"]),
                                  "preferred_username": user.username}
        if user.fhir_user:
            claims["fhirUser"] = f"{fhir_base}/{user.fhir_user}"
        if nonce:
            claims["nonce"] = nonce
        signing = self.keys.current()
        return jwt.encode({"alg": ALGORITHM, "kid": signing.kid}, claims, signing.key)

    # ------------------------------------------------------------------ check

    def check(self, token: str, audience: str, issuer: str) -> dict[str, Any]:
        """The claims of a valid access token for this server, or ``InvalidToken``."""
        claims = self._valid.get(token)
        if claims is None:
            try:
                decoded = jwt.decode(token, self.keys.key_set(), algorithms=[ALGORITHM])
            except (JoseError, ValueError, TypeError):
                raise InvalidToken("the access token is malformed or its signature is not "
                                   "valid") from None
            if decoded.header.get("typ") != "at+jwt":
                raise InvalidToken("this is not an access token")
            claims = decoded.claims
            if claims.get("iss") != issuer:
                raise InvalidToken("the access token was issued by another server")
            self._valid[token] = claims
            if len(self._valid) > _CACHE_SIZE:
                self._valid.popitem(last=False)
        now = time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise InvalidToken("the access token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf > now + _LEEWAY):
            raise InvalidToken("the access token is not valid yet (nbf)")
        for name in ("patient", "encounter", "sub", "client_id", "scope", "fhirUser", "role"):
            if name in claims and not isinstance(claims[name], str):
                raise InvalidToken(f"the access token's {name} claim is not a string")
        if claims.get("aud") != audience:
            raise InvalidToken(f"the access token is for another audience, not {audience}")
        if claims.get("jti") in self._revoked:
            raise InvalidToken("the access token has been revoked")
        return claims

    def sync_due(self) -> bool:
        return int(time.time() * 1000) - self._synced_ms >= 1000

    def sync(self, force: bool = False) -> None:
        """Pick up revocations made by other processes (at most once a second)."""
        now_ms = int(time.time() * 1000)
        if not force and now_ms - self._synced_ms < 1000:
            return
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            since = self._synced_ms - 5000  # overlap: a slow commit lands a little late
            self._synced_ms = now_ms
            with self.engine.connect() as conn:
                rows = conn.execute(select(T.c.jti).where(T.c.revoked_at >= since)).all()
            self._revoked.update(row.jti for row in rows)
        finally:
            self._sync_lock.release()

    def record(self, jti: str) -> TokenRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T).where(T.c.jti == jti)).first()
        return _record(row) if row else None

    def decode_any(self, token: str) -> dict[str, Any] | None:
        """Claims of one of our access tokens without the audience or expiry check (for
        introspection and revocation), or ``None``."""
        try:
            return jwt.decode(token, self.keys.key_set(), algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError, TypeError):
            return None

    # ------------------------------------------------------------------ refresh and revoke

    def by_refresh(self, refresh_token: str) -> TokenRecord | None:
        """The live grant a refresh token belongs to; ``None`` if unknown, used, revoked,
        expired, or (``online_access``) its login session has ended."""
        now = int(time.time())
        with self.engine.connect() as conn:
            row = conn.execute(select(T).where(T.c.refresh_hash == digest(refresh_token))
                               ).first()
            if row is None or row.revoked or (row.refresh_expires or 0) <= now:
                return None
            if row.session_hash is not None:
                session = conn.execute(select(S).where(S.c.session_hash == row.session_hash)
                                       ).first()
                if session is None or now - session.last_seen > self.session_idle:
                    return None
        return _record(row)

    def retire_refresh(self, record: TokenRecord) -> None:
        """Rotation: a refresh token works once; the access token it came with stays valid."""
        with self._tx() as conn:
            conn.execute(update(T).where(T.c.jti == record.jti).values(refresh_hash=None))

    def revoke(self, jti: str) -> bool:
        with self._tx() as conn:
            done = conn.execute(update(T).where(T.c.jti == jti).values(
                revoked=True, revoked_at=int(time.time() * 1000), refresh_hash=None))
        self._revoked.add(jti)
        return done.rowcount > 0

    def purge(self) -> int:
        """Forget grants whose access and refresh tokens have both expired."""
        now = int(time.time())
        with self._tx() as conn:
            gone = conn.execute(delete(T).where(T.c.expires < now - 300,
                                                (T.c.refresh_expires.is_(None))
                                                | (T.c.refresh_expires < now)))
        return gone.rowcount
