"""The rest-hook channel of topic-based subscriptions (an edge: the core knows no HTTP):
claims due subscriptions from the durable queue and POSTs their notifications, many at once,
each subscription's events in order.

One thread runs an asyncio loop with an HTTP client. A round claims up to as many due
subscriptions as there are free delivery slots (a lease, ``store/queues.py``: a sender in
another process skips them), builds each one's notification (its handshake, its undelivered
events oldest first, at most ``max-count`` of them, or its heartbeat) and starts one task per
subscription. A slow or failing endpoint holds only its own slot, for at most its timeout,
and waits out its own backoff (5 s doubling to an hour, the queue rules); every other
subscription goes on. Outcomes are written back in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
from prometheus_client import Counter

from sonobridge import jsonio
from sonobridge.core.subscriptions.model import Config, private_address
from sonobridge.core.subscriptions.service import Subscriptions
from sonobridge.store import queues
from sonobridge.store.queues import QueueRow
from sonobridge.store.subscriptions import Outcome
from sonobridge.store.timeutil import now_us

log = logging.getLogger("sonobridge.subscriptions.delivery")

RETENTION = 30 * 86_400  # seconds delivered events stay readable by $events
PRUNE_EVERY = 600.0  # seconds between two prunings

DELIVERED = Counter("sonobridge_subscription_notifications_total",
                    "Subscription notifications sent by rest-hook, by kind and outcome",
                    ["kind", "outcome"])


@dataclass
class Prepared:
    row: QueueRow
    kind: str  # handshake | event-notification | heartbeat | none
    config: Config
    body: bytes = b""
    last: int = 0  # the last event number this notification carries
    refused: str | None = None  # why it may not be sent (a private address)


class RestHookSender:
    name = "subscriptions"

    def __init__(self, service: Subscriptions, *, concurrency: int = 4,
                 slow_after: float = 0.5, claim_ahead: int = 256,
                 interval: float = 1.0, first_delay: int = queues.FIRST_DELAY,
                 max_delay: int = queues.MAX_DELAY, handshake_attempts: int = 5,
                 allow_private: bool | None = None) -> None:
        self.service = service
        self.queue = service.queue
        self.concurrency = concurrency
        self.interval = interval
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.handshake_attempts = handshake_attempts
        self.allow_private = service.allow_private if allow_private is None else allow_private
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        # Claimed ahead of the free connections (a claim is one transaction however many
        # rows it takes): at most this many subscriptions are being delivered at once.
        self.claim_ahead = max(claim_ahead, concurrency)
        # ``concurrency`` requests are started at once; one that has not been answered after
        # ``slow_after`` seconds gives its slot up and goes on waiting (up to its timeout), so
        # slow endpoints never hold up the others, and fast ones are not slowed by hundreds
        # of connections open at once (bench/subscriptions.py: 4 at once deliver the most).
        self.slow_after = slow_after
        self._slots: asyncio.Semaphore | None = None
        self._outcomes: list[tuple[Outcome, str]] = []
        self._hosts: dict[str, tuple[float, str | None]] = {}
        self.sent = 0  # notifications answered 2xx (for the benchmark and tests)
        self.retention = RETENTION
        self._pruned = 0.0

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        self.service.wakers.append(self.wake)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.wake in self.service.wakers:
            self.service.wakers.remove(self.wake)

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop just closed
                loop.call_soon_threadsafe(event.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        # httpcore's pool (httpx's transport) directly: half the CPU per request of httpx's
        # client (measured), which is most of a delivery's cost. No redirects, no proxies
        # from the environment: a notification goes where the Subscription says.
        async with httpcore.AsyncConnectionPool(
                max_connections=self.claim_ahead + self.concurrency,
                max_keepalive_connections=self.concurrency * 4) as client:
            while not self._stopping.is_set():
                try:
                    started = await self._round(client)
                    await self._flush()
                    if time.monotonic() - self._pruned > PRUNE_EVERY:
                        self._pruned = time.monotonic()
                        await asyncio.to_thread(self.queue.prune,
                                                now_us() - self.retention * 1_000_000)
                except Exception:
                    log.exception("subscriptions: round failed")
                    started = 0
                if started:
                    await asyncio.sleep(0)
                    continue
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           0.05 if self._outcomes else self.interval)
                    # Gather what else is finishing: one claim and one write-back for many.
                    await asyncio.sleep(0.02 if self._inflight else 0.002)
                except TimeoutError:
                    pass
                self._wake.clear()
            if self._inflight:
                await asyncio.wait(self._inflight, timeout=5)
            await self._flush()

    # ------------------------------------------------------------ a round

    async def _round(self, client: httpcore.AsyncConnectionPool) -> int:
        free = self.claim_ahead - len(self._inflight)
        if free < self.claim_ahead // 4:
            return 0
        now = now_us()
        rows = await asyncio.to_thread(self.queue.claim_due, now, free)
        if len(rows) < free:
            rows += await asyncio.to_thread(self.queue.claim_heartbeats, now, free - len(rows))
        if not rows:
            return 0
        prepared = await asyncio.to_thread(self._prepare, rows)
        for item in prepared:
            task = asyncio.create_task(self._deliver(client, item))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(rows)

    def _refused(self, endpoint: str) -> str | None:
        """At send time too (a name may have come to resolve to a private address)."""
        if self.allow_private:
            return None
        host = urlsplit(endpoint).hostname or ""
        cached = self._hosts.get(host)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + 60, private_address(host))
            self._hosts[host] = cached
        return f"{host} is a private address ({cached[1]})" if cached[1] else None

    def _prepare(self, rows: list[QueueRow]) -> list[Prepared]:
        """Each claimed subscription's notification (database reads: in a worker thread)."""
        pending = self.queue.pending([r for r in rows if r.phase == "active"])
        out = []
        for row in rows:
            config = self.service.config_of(row.config)
            item = Prepared(row, "none", config, last=int(row.delivered))
            events = pending.get(row.subscription_id, [])[:config.max_count]
            if row.phase == "handshake":
                item.kind = "handshake"
                body = self.service.notification(row.subscription_id, config, "handshake",
                                                 int(row.events), [], row.owner,
                                                 status="requested")
            elif events:
                item.kind, item.last = "event-notification", events[-1].number
                body = self.service.notification(row.subscription_id, config,
                                                 "event-notification", int(row.events),
                                                 events, row.owner)
            elif config.heartbeat:
                item.kind = "heartbeat"
                body = self.service.notification(row.subscription_id, config, "heartbeat",
                                                 int(row.events), [], row.owner)
            else:
                out.append(item)
                continue
            item.body = jsonio.dumps(body)
            item.refused = self._refused(config.endpoint)
            out.append(item)
        return out

    async def _deliver(self, client: httpcore.AsyncConnectionPool, item: Prepared) -> None:
        row, config = item.row, item.config
        error = ""
        if item.kind != "none":
            if item.refused:
                error = item.refused
            else:
                headers = {"Content-Type": config.content_type}
                for line in config.headers:
                    name, _, value = line.partition(":")
                    headers[name.strip()] = value.strip()
                try:
                    status = await self._post(client, config, item.body, headers)
                    if not 200 <= status < 300:
                        error = f"{config.endpoint} answered HTTP {status}"
                except TimeoutError:
                    error = f"{config.endpoint}: Timeout: no answer within {config.timeout} s"
                except (httpcore.TimeoutException, httpcore.NetworkError,
                        httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                        httpcore.ProxyError, OSError) as exc:
                    error = f"{config.endpoint}: {type(exc).__name__}: {exc}"[:1024]
            DELIVERED.labels(item.kind, "error" if error else "ok").inc()
            if not error:
                self.sent += 1
        self._outcomes.append((Outcome(
            int(row.id), row.subscription_id, ok=not error, delivered=item.last,
            attempts=int(row.attempts), handshake=item.kind == "handshake", error=error),
            item.kind))
        # Wake the loop to write outcomes back in batches (or when this was the last one).
        if self._wake is not None and (len(self._outcomes) >= 100 or len(self._inflight) <= 1):
            self._wake.set()

    async def _post(self, client: httpcore.AsyncConnectionPool, config: Config, body: bytes,
                    headers: dict[str, str]) -> int:
        """POST one notification; its status code. The whole exchange is bounded by the
        subscription's timeout (a receiver dripping its answer byte by byte included)."""
        assert self._slots is not None
        await self._slots.acquire()
        holding = True
        seconds = float(config.timeout)
        timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}

        async def exchange() -> int:
            async with asyncio.timeout(seconds):
                pairs: list[tuple[bytes | str, bytes | str]] = list(headers.items())
                response = await client.request("POST", config.endpoint, headers=pairs,
                                                content=body,
                                                extensions={"timeout": timeouts})
                return int(response.status)

        request = asyncio.ensure_future(exchange())
        try:
            done, _ = await asyncio.wait({request}, timeout=self.slow_after)
            if not done:
                self._slots.release()  # a slow one: let the next one start
                holding = False
            return await request
        finally:
            if holding:
                self._slots.release()
            if not request.done():
                request.cancel()

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        changed = await asyncio.to_thread(
            self.queue.finished, [o for o, _ in outcomes], now_us(), self.first_delay,
            self.max_delay, self.handshake_attempts)
        failed = [sid[1:] for sid in changed if sid.startswith("!")]
        active = [sid for sid in changed if not sid.startswith("!")]
        for ids, status in ((active, "active"), (failed, "error")):
            if not ids:
                continue
            try:
                await asyncio.to_thread(self.service.set_status, ids, status, "requested")
            except Exception:
                log.exception("subscriptions: could not record %s as %s", ids, status)

    def status(self) -> dict[str, Any]:
        return {"inflight": len(self._inflight), "sent": self.sent}
