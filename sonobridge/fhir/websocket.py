"""The websocket channel of topic-based subscriptions (Subscriptions R5 Backport).

A client gets a binding token with ``Subscription/[id]/$get-ws-binding-token`` (an ordinary
authorized FHIR call), opens the ``websocket-url`` it names (``/fhir/subscription-ws``) and
sends ``bind-with-token: <token>``. The server answers a ``handshake`` notification per bound
subscription, then sends every new event as a notification Bundle (JSON text frames), in
event order, and a ``heartbeat`` when the subscription asks for one and nothing happened.
Events from before the bind are read with ``$events``. The token is the authorization here:
the endpoint is outside the bearer guard (a browser cannot set headers on a websocket).

Thin: the core's subscription service finds the events and builds the bundles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sonobridge.core.subscriptions.service import Subscriptions

PATH = "/fhir/subscription-ws"
BIND = "bind-with-token"
MAX_MESSAGE = 4096


def _outcome(text: str) -> str:
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "security", "diagnostics": text}]}).decode()


def parse_bind(message: str) -> str | None:
    """``bind-with-token: TOKEN`` (the colon is optional) -> TOKEN."""
    if len(message) > MAX_MESSAGE or not message.startswith(BIND):
        return None
    token = message[len(BIND):].lstrip(":").strip()
    return token or None


class SubscriptionSocket:
    """The ASGI websocket endpoint. A bound socket looks at its subscriptions' event counters
    when a commit in this process triggered events (the service's wakers), and every ``poll``
    seconds for those another process triggered."""

    def __init__(self, service: Subscriptions, *, poll: float = 1.0,
                 bind_timeout: float = 30.0) -> None:
        self.service = service
        self.poll = poll
        self.bind_timeout = bind_timeout
        self._sockets: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        service.wakers.append(self._wake)

    def _wake(self) -> None:
        """Told after a commit that triggered events (from whichever thread committed)."""
        for loop, event in list(self._sockets):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def route(self) -> WebSocketRoute:
        return WebSocketRoute(PATH, self.endpoint)

    async def endpoint(self, ws: WebSocket) -> None:
        await ws.accept()
        bound: dict[str, int] = {}  # subscription id -> last event number sent
        beats: dict[str, float] = {}
        receiver: asyncio.Task[str] | None = None
        wake = asyncio.Event()
        me = (asyncio.get_running_loop(), wake)
        self._sockets.add(me)
        try:
            try:
                first = await asyncio.wait_for(ws.receive_text(), self.bind_timeout)
            except TimeoutError:
                await ws.send_text(_outcome(f"send '{BIND}: <token>' first"))
                await ws.close(code=1008)
                return
            if not await self._bind(ws, first, bound, beats):
                return
            receiver = asyncio.create_task(ws.receive_text())
            while True:
                woken = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait({receiver, woken}, timeout=self.poll,
                                             return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                wake.clear()
                if receiver in done:
                    message = receiver.result()  # raises WebSocketDisconnect on close
                    if not await self._bind(ws, message, bound, beats):
                        return
                    receiver = asyncio.create_task(ws.receive_text())
                await self._send_new(ws, bound, beats)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self._sockets.discard(me)
            if receiver is not None:
                receiver.cancel()
                with contextlib.suppress(BaseException):
                    await receiver

    async def _bind(self, ws: WebSocket, message: str, bound: dict[str, int],
                    beats: dict[str, float]) -> bool:
        token = parse_bind(message)
        ids = await run_in_threadpool(self.service.bind, token) if token else []
        if not ids:
            await ws.send_text(_outcome("unknown or expired binding token; get one with "
                                        "Subscription/[id]/$get-ws-binding-token"))
            await ws.close(code=1008)
            return False
        counts = await run_in_threadpool(self.service.queue.counts, ids)
        for sid in ids:
            if sid in bound:
                continue
            bound[sid] = counts.get(sid, 0)
            beats[sid] = time.monotonic()
            handshake = await run_in_threadpool(self.service.handshake, sid)
            if handshake is not None:
                await ws.send_text(orjson.dumps(handshake).decode())
        return True

    async def _send_new(self, ws: WebSocket, bound: dict[str, int],
                        beats: dict[str, float]) -> None:
        for sid, last in list(bound.items()):
            idle = time.monotonic() - beats[sid]
            result: tuple[int, dict[str, Any] | None] = await run_in_threadpool(
                self.service.since, sid, last, idle)
            bound[sid], bundle = result
            if bundle is not None:
                await ws.send_text(orjson.dumps(bundle).decode())
                beats[sid] = time.monotonic()
