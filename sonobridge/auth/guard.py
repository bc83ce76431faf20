"""The bearer-token guard in front of FHIR and DICOMweb: one token for both APIs.

Pure ASGI middleware: it turns the ``Authorization`` header into a ``Policy`` the edges find in
``scope["state"]["policy"]``, or answers 401 itself (RFC 6750). Whether the policy allows the
particular interaction is the edge's question (403), asked of the same object.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sonobridge.auth.server import Site
from sonobridge.auth.service import AuthService
from sonobridge.auth.tokens import InvalidToken
from sonobridge.core.policy import Policy
from sonobridge.web.baseurl import base_url

PROTECTED = ("/fhir", "/dicomweb", "/wado")
# Discovery must be readable before a client has a token.
PUBLIC = ("/fhir/metadata", "/fhir/.well-known/")
ANONYMOUS = Policy(subject="anonymous", client_id="")


def site_of(scope: Scope, configured: str | None) -> Site:
    headers = Headers(scope=scope)
    root = base_url(headers, scope.get("scheme", "http"), configured, scope.get("server"))
    client = scope.get("client")
    return Site(root, client[0] if client else "")


class BearerGuard:
    def __init__(self, app: ASGIApp, auth: AuthService, configured_base: str | None) -> None:
        self.app = app
        self.auth = auth
        self.configured_base = configured_base
        self._open = Policy.open()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(PROTECTED) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.auth.enabled:
            state["policy"] = self._open
            await self.app(scope, receive, send)
            return
        if path.startswith(PUBLIC) or path == "/fhir/metadata/":
            state["policy"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            await _unauthorized(send, path, None, "an access token is required (Authorization: "
                                "Bearer …)")
            return
        site = site_of(scope, self.configured_base)
        if self.auth.tokens.sync_due():
            await anyio.to_thread.run_sync(self.auth.tokens.sync)
        try:
            policy = self.auth.policy(token, site)
        except InvalidToken as exc:
            await _unauthorized(send, path, "invalid_token", str(exc))
            return
        state["policy"] = policy
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            return None
    return None


async def _unauthorized(send: Send, path: str, error: str | None, description: str) -> None:
    challenge = 'Bearer realm="sonobridge"'
    if error:
        safe = description.replace('"', "'")
        challenge += f', error="{error}", error_description="{safe}"'
    body: dict[str, Any]
    if path.startswith("/fhir"):
        body = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "login", "diagnostics": description}]}
        media = b"application/fhir+json"
    else:
        body = {"error": error or "unauthorized", "error_description": description}
        media = b"application/json"
    content = orjson.dumps(body)
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", media), (b"content-length", str(len(content)).encode()),
        (b"www-authenticate", challenge.encode("latin-1", "replace")),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": content})
