"""HTTP for the tests: every exchange is kept as evidence, and what goes wrong on the wire
(a timeout, a refused or closed connection, a body that is not the JSON it claims) becomes a
:class:`Failed` with the reason instead of an exception out of the kit."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from sonobridge.conformance.kit.model import Check, Evidence, Failed

BODY_LIMIT = 4000
SECRET_HEADERS = {"authorization", "cookie", "set-cookie"}
SECRET_FIELDS = re.compile(r"((?:^|&)(?:password|otp|totp|client_secret)=)[^&]*")


def _text(content: bytes, content_type: str) -> str:
    if not content:
        return ""
    textual = any(k in content_type for k in ("json", "xml", "text", "html", "x-www-form"))
    if not textual:
        return f"<{len(content)} bytes of {content_type or 'unknown type'}>"
    text = content[:BODY_LIMIT].decode("utf-8", "replace")
    if len(content) > BODY_LIMIT:
        text += f"\n… ({len(content)} bytes in all)"
    return text


def _headers(headers: httpx.Headers) -> str:
    return "\n".join(f"{k}: {'***' if k.lower() in SECRET_HEADERS else v}"
                     for k, v in headers.items())


class Http:
    """A client bound to one check: ``check.http.get(...)`` keeps the exchange."""

    def __init__(self, client: httpx.Client, check: Check) -> None:
        self.client = client
        self.check = check

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = time.monotonic()
        request = self.client.build_request(method, url, **kwargs)
        req_text = f"{method} {request.url}\n{_headers(request.headers)}"
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b""
        if body:
            ctype = request.headers.get("content-type", "")
            shown = _text(body, ctype)
            if "x-www-form-urlencoded" in ctype:  # a login form's password stays out of reports
                shown = SECRET_FIELDS.sub(r"\1***", shown)
            req_text += "\n\n" + shown
        try:
            response = self.client.send(request)
        except httpx.TimeoutException as exc:
            self._keep(method, request, req_text, started, f"timeout ({type(exc).__name__})")
            raise Failed(f"{method} {request.url}: no answer within the timeout "
                         f"({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            self._keep(method, request, req_text, started, f"{type(exc).__name__}: {exc}")
            raise Failed(f"{method} {request.url}: {type(exc).__name__}: {exc or 'closed'}"
                         ) from None
        elapsed = (time.monotonic() - started) * 1000
        ctype = response.headers.get("content-type", "")
        self.check.record(Evidence(
            "http", f"{method} {request.url.path}"
                    f"{'?' + request.url.query.decode() if request.url.query else ''}"
                    f" → {response.status_code}",
            request=req_text, status=str(response.status_code), elapsed_ms=elapsed,
            response=f"HTTP {response.status_code}\n{_headers(response.headers)}\n\n"
                     f"{_text(response.content, ctype)}"))
        return response

    def _keep(self, method: str, request: httpx.Request, req_text: str, started: float,
              what: str) -> None:
        self.check.record(Evidence("http", f"{method} {request.url.path} → {what}",
                                   request=req_text, status=what,
                                   elapsed_ms=(time.monotonic() - started) * 1000))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


def json_body(response: httpx.Response, what: str = "the response") -> Any:
    """The JSON of ``response``, or a failure that says what came instead."""
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        ctype = response.headers.get("content-type", "no content type")
        start = response.content[:60].decode("utf-8", "replace")
        raise Failed(f"{what} is not JSON (HTTP {response.status_code}, {ctype}: "
                     f"{start!r})") from None


def expect_status(response: httpx.Response, *statuses: int, what: str = "") -> None:
    if response.status_code not in statuses:
        detail = ""
        ctype = response.headers.get("content-type", "")
        if "json" in ctype:
            try:
                body = json.loads(response.content)
                if body.get("resourceType") == "OperationOutcome":
                    detail = "; " + "; ".join(
                        str(i.get("diagnostics") or i.get("details", {}).get("text") or
                            i.get("code")) for i in body.get("issue", []))[:300]
            except (ValueError, AttributeError):
                pass
        want = " or ".join(str(s) for s in statuses)
        raise Failed(f"{what or response.request.method + ' ' + response.request.url.path}: "
                     f"HTTP {response.status_code}, expected {want}{detail}")
