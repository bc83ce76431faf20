"""Topic-based subscriptions: validated on write, triggered in the transaction of the change,
read back by ``$status`` and ``$events``, bound to websockets by ``$get-ws-binding-token``.

- ``ResourceWriting`` of a Subscription: refused (422 with the element) when the topic is
  unknown, the channel or payload is not offered, the endpoint is not http(s) or is a private
  address (unless ``SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE``), or a client sets a status only
  the server sets (``active`` after the handshake, ``error``).
- ``ResourceChanged`` of a Subscription keeps its queue row (``store/subscriptions.py``) in
  step; of a topic's resource type, it records one numbered event per matching subscription
  in the same transaction, so the notification commits with the change and is never lost.
- Full resources (and ids) go out only when the subscription's owner (whoever last wrote the
  Subscription) may read them: otherwise the event is told without its focus.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sonobridge import jsonio
from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller, Forbidden, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.subscriptions import model, notifications, topics
from sonobridge.core.subscriptions.model import Config
from sonobridge.core.subscriptions.notifications import Notified
from sonobridge.store.resources import Writer
from sonobridge.store.subscriptions import Event, SubscriptionQueue
from sonobridge.store.timeutil import now_us, to_instant

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.subscriptions")

# The server's own writes to Subscriptions (requested -> active, -> error).
SELF = Policy.system("sonobridge:subscriptions", "sonobridge")
OPS = f"{topics.BACKPORT}/OperationDefinition"
TOKEN_LIFETIME = 300  # seconds a websocket binding token may be used to bind
EVENTS_PAGE = 100  # events one $events answer carries at most


def policy_json(policy: Policy) -> bytes:
    return jsonio.dumps({"subject": policy.subject, "client_id": policy.client_id,
                         "scope": policy.raw_scope, "patient": policy.patient,
                         "role": policy.role, "fhir_user": policy.fhir_user,
                         "unrestricted": policy.unrestricted})


def policy_of(data: bytes) -> Policy:
    """The owner's rights as they were when the Subscription was written."""
    raw = jsonio.loads(data)
    return Policy(subject=raw["subject"], client_id=raw["client_id"],
                  scopes=tuple(resource_scopes(raw["scope"])), patient=raw["patient"],
                  role=raw["role"], fhir_user=raw["fhir_user"],
                  unrestricted=bool(raw["unrestricted"]), raw_scope=raw["scope"])


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _split_focus(focus: str) -> tuple[str, str, int]:
    path, _, version = focus.partition("/_history/")
    res_type, _, res_id = path.partition("/")
    return res_type, res_id, int(version or 0)


class Subscriptions:
    """The subscriptions domain, attached to a core (``attach``)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.queue = SubscriptionQueue(core.engine)
        self.allow_private = bool(getattr(core.settings, "subscription_allow_private", False))
        # Told after a commit that triggered events (the rest-hook sender wakes up).
        self.wakers: list[Callable[[], None]] = []
        self._configs: dict[bytes, Config] = {}
        self._owners: dict[bytes, Policy] = {}
        # The status a resource had before this transaction's write (ResourceWriting), for
        # topics that fire on a transition; forgotten with the writer.
        self._before: weakref.WeakKeyDictionary[Writer, dict[tuple[str, str], str | None]] = \
            weakref.WeakKeyDictionary()

    @property
    def base(self) -> str:
        return str(self.core.settings.public_base)

    def attach(self) -> None:
        events = self.core.events
        events.listen(ResourceWriting, self._writing)
        events.listen(ResourceChanged, self._changed)
        self.core.store.after_commit.append(self._committed)
        ops = self.core.operations
        sub = frozenset({"Subscription"})
        ops.register(Operation("status", frozenset({"type", "instance"}), self._status,
                               types=sub, definition=f"{OPS}/backport-subscription-status",
                               documentation="Status of topic-based subscriptions "
                               "(Subscriptions R5 Backport)."))
        ops.register(Operation("events", frozenset({"instance"}), self._events, types=sub,
                               definition=f"{OPS}/backport-subscription-events",
                               documentation="Past notifications of a subscription, by event "
                               f"number (at most {EVENTS_PAGE} per call)."))
        ops.register(Operation("get-ws-binding-token", frozenset({"type", "instance"}),
                               self._ws_token, types=sub, affects_state=True,
                               definition=f"{OPS}/backport-subscription-get-ws-binding-token",
                               documentation="A token to bind a websocket to websocket-channel "
                               "subscriptions."))

    # ------------------------------------------------------------ write hooks

    def _writing(self, event: ResourceWriting) -> None:
        if event.res_type in topics.TRANSITION_TYPES and event.res_id is not None:
            before = (event.previous or {}).get("status")
            self._before.setdefault(event.writer, {})[(event.res_type, event.res_id)] = \
                before if isinstance(before, str) else None
            return
        if event.res_type != "Subscription":
            return
        resource = event.resource
        server = event.caller.policy == SELF  # the server itself, not a caller named alike
        model.read_subscription(resource, allow_private=self.allow_private or server)
        status = resource.get("status")
        previous = (event.previous or {}).get("status")
        if server:
            return
        if status == "error" and previous != "error":
            raise CoreError(422, "business-rule", "status 'error' is set by the server when "
                            "it cannot deliver", expression=["Subscription.status"])
        if status == "active" and previous != "active":
            raise CoreError(422, "business-rule", "a subscription is created 'requested' (or "
                            "'off'); the server makes it 'active' after a successful "
                            "handshake", expression=["Subscription.status"])

    def _changed(self, event: ResourceChanged) -> None:
        stored = event.stored
        if stored.type == "Subscription":
            self._subscription_changed(event)
            return
        before = self._before.get(event.writer, {}).pop((stored.type, stored.id), None) \
            if stored.type in topics.TRANSITION_TYPES else None
        if not event.changed or stored.type not in topics.TRIGGER_TYPES:
            return
        for topic in topics.topics_for(stored.type):
            if topic.trigger(event.action, event.resource, before):
                self._trigger(event.writer, topic, event)

    def _subscription_changed(self, event: ResourceChanged) -> None:
        writer, sid, now = event.writer, event.stored.id, event.writer.now
        if event.action == "D" or event.resource is None:
            self.queue.switch_off(writer.conn, sid, now)
            return
        config = model.read_subscription(event.resource, allow_private=True)
        config.base = event.caller.base or self.base
        owner = event.caller.policy
        if owner == SELF:
            owner_json = self.queue.owner(writer.conn, sid) or policy_json(SELF)
        else:
            owner_json = policy_json(owner)
        handshake = config.channel == "rest-hook" and config.status == "requested" \
            and owner != SELF
        self.queue.upsert(writer.conn, sid, topic=config.topic, channel=config.channel,
                          heartbeat=config.heartbeat, config=jsonio.dumps(config.to_json()),
                          owner=owner_json, handshake=handshake, now=now)
        if config.status in ("off", "error"):
            self.queue.switch_off(writer.conn, sid, now)

    def _config(self, data: bytes) -> Config:
        config = self._configs.get(data)
        if config is None:
            if len(self._configs) > 10_000:
                self._configs.clear()
            config = self._configs[data] = Config.from_json(jsonio.loads(data))
        return config

    def _trigger(self, writer: Writer, topic: topics.Topic, event: ResourceChanged) -> None:
        """One event for each subscription whose filters match and whose owner may read the
        focus (as the index stands in this transaction): a subscriber learns nothing, not
        even that something happened, about what its rights do not cover."""
        resource = event.resource
        assert resource is not None
        stored = event.stored
        base = event.caller.base or self.base
        matching = []
        flushed = False
        for sid, data, owner in self.queue.listening(writer.conn, topic.canonical):
            config = self._config(data)
            if config.end and config.end <= writer.now:
                continue  # Subscription.end has passed
            if not topics.matches(topic, config.filters, resource, base):
                continue
            policy = self._owner(owner)
            if not policy.unrestricted:
                if not flushed:
                    writer.flush()  # the index rows of this write, for the rights check
                    flushed = True
                try:
                    seen = self.core.access.visible(writer.conn, Caller(policy, base), "r",
                                                    [(stored.type, stored.id)])
                except (Forbidden, CoreError):
                    seen = set()
                if not seen:
                    continue
            matching.append(sid)
        if matching:
            focus = f"{stored.type}/{stored.id}/_history/{stored.version_id}"
            self.queue.record(writer.conn, matching, focus, writer.now)
            writer.types_written.add("#subscription-event")

    def _owner(self, data: bytes) -> Policy:
        policy = self._owners.get(data)
        if policy is None:
            if len(self._owners) > 10_000:
                self._owners.clear()
            policy = self._owners[data] = policy_of(data)
        return policy

    def _committed(self, writer: Writer) -> None:
        if "#subscription-event" in writer.types_written or \
                "Subscription" in writer.types_written:
            for wake in self.wakers:
                wake()

    # ------------------------------------------------------------ notifications

    def notified(self, events: Sequence[Event], content: str, reader: Caller | None
                 ) -> list[Notified]:
        """The events as a notification tells them: the focus only when ``reader`` may read
        it (``None``: nobody may), the resource too for ``full-resource``."""
        out = []
        for event in events:
            res_type, res_id, version = _split_focus(event.focus)
            focus: str | None = f"{res_type}/{res_id}"
            resource = None
            if content != "empty":
                if reader is None:
                    focus = None
                elif content == "full-resource" or not reader.policy.unrestricted:
                    try:
                        stored = self.core.resources.vread(reader, res_type, res_id,
                                                           str(version))
                        if content == "full-resource" and stored.content is not None:
                            resource = jsonio.loads(stored.content)
                    except CoreError:
                        focus = None  # not the owner's to see: told without its focus
            out.append(Notified(event.number, to_instant(event.created), focus, resource))
        return out

    def owner_caller(self, owner: bytes) -> Caller:
        return Caller(self._owner(owner), self.base, "subscription")

    def notification(self, subscription_id: str, config: Config, kind: str, since_start: int,
                     events: Sequence[Event], owner: bytes, status: str = "active",
                     error: str | None = None) -> dict[str, Any]:
        reader = self.owner_caller(owner)
        return notifications.bundle(
            config.base or self.base, subscription_id, config.topic, status, kind, since_start,
            self.notified(events, config.content, reader), config.content,
            to_instant(now_us()), error)

    def config_of(self, data: bytes) -> Config:
        return self._config(data)

    def set_status(self, subscription_ids: str | Sequence[str], status: str, only_from: str
                   ) -> None:
        """The server's own status change (requested -> active after the handshake, -> error
        when the handshake fails for good), as ordinary versioned updates, in one
        transaction however many subscriptions it is for."""
        ids = [subscription_ids] if isinstance(subscription_ids, str) else subscription_ids
        with self.core.store.write() as writer:
            self.queue.lock(writer.conn, ids)  # the rows the updates will touch, in order
            for sid in ids:
                body = self.core.resources.current(writer, "Subscription", sid)
                if body is None or body.get("status") != only_from:
                    continue
                body["status"] = status
                row = self.queue.channel(sid)
                base = self._config(row.config).base if row is not None else ""
                caller = Caller(SELF, base or self.base, "subscriptions")
                self.core.resources.update(caller, "Subscription", sid, body, writer=writer)

    # ------------------------------------------------------------ operations

    def _readable(self, call: OperationCall, subscription_id: str) -> dict[str, Any]:
        stored = self.core.resources.read(call.caller, "Subscription", subscription_id)
        assert stored.content is not None
        body: dict[str, Any] = jsonio.loads(stored.content)
        return body

    def _ids(self, call: OperationCall) -> list[str]:
        if call.level == "instance":
            assert call.res_id is not None
            return [call.res_id]
        ids = [str(v) for v in call.params("id")]
        if not ids:
            raise CoreError(400, "required", f"${call.name} on the Subscription type needs "
                            "one or more id parameters", expression=["Parameters.parameter"])
        if len(ids) > EVENTS_PAGE:
            raise CoreError(400, "too-costly", f"at most {EVENTS_PAGE} ids per call")
        return ids

    def _status_of(self, sid: str, resource: dict[str, Any]) -> tuple[str, int, str | None]:
        row = self.queue.channel(sid)
        status = str(resource.get("status", "requested"))
        if row is None:
            return status, 0, None
        if row.status == "retry" and status == "active":
            return "error", int(row.events), row.error
        return status, int(row.events), row.error if row.status == "retry" else None

    def _visible_ids(self, call: OperationCall) -> list[str]:
        """The Subscriptions the caller may read (the first ``EVENTS_PAGE``), for a
        type-level ``$status`` without ids."""
        from sonobridge.core.resources import SearchSpec

        bundle = self.core.resources.search(call.caller, SearchSpec(
            "Subscription", [("_count", str(EVENTS_PAGE)), ("_sort", "_id")])).bundle
        # Entries hold the stored bytes (not parsed): the id is the fullUrl's last segment.
        return [str(e["fullUrl"]).rsplit("/", 1)[-1] for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode", "match") == "match" and "fullUrl" in e]

    def _status(self, call: OperationCall) -> OperationResult:
        entries = []
        everything = call.level == "type" and not call.params("id")
        for sid in self._visible_ids(call) if everything else self._ids(call):
            resource = self._readable(call, sid)
            status, count, error = self._status_of(sid, resource)
            params = notifications.status_parameters(
                call.caller.base or self.base, sid, str(resource.get("criteria")), status,
                "query-status", count, [], "empty", error)
            entries.append({"fullUrl": f"urn:uuid:{params['id']}", "resource": params,
                            "search": {"mode": "match"}})
        return OperationResult({"resourceType": "Bundle", "type": "searchset",
                                "total": len(entries), "entry": entries})

    @staticmethod
    def _number(call: OperationCall, name: str, default: int) -> int:
        value = call.param(name)
        if value is None:
            return default
        text = str(value)
        if not text.isdecimal() or len(text) > 18:
            raise CoreError(400, "invalid", f"{name} is an event number (a whole number), "
                            f"not {text!r}", expression=[f"Parameters.parameter('{name}')"])
        return int(text)

    def _events(self, call: OperationCall) -> OperationResult:
        assert call.res_id is not None
        sid = call.res_id
        resource = self._readable(call, sid)
        config = model.read_subscription(resource, allow_private=True)
        status, count, error = self._status_of(sid, resource)
        since = self._number(call, "eventsSinceNumber", 1)
        until = self._number(call, "eventsUntilNumber", count)
        if since > until and call.param("eventsUntilNumber") is not None:
            raise CoreError(400, "invalid", f"eventsSinceNumber {since} is after "
                            f"eventsUntilNumber {until}",
                            expression=["Parameters.parameter('eventsSinceNumber')"])
        content = str(call.param("content") or config.content)
        if content not in model.CONTENTS:
            raise CoreError(400, "invalid", f"content is one of {', '.join(model.CONTENTS)}",
                            expression=["Parameters.parameter('content')"])
        events = self.queue.events(sid, since, until, EVENTS_PAGE)
        # The caller's own rights decide what it sees of each focus.
        return OperationResult(notifications.bundle(
            call.caller.base or self.base, sid, config.topic, status, "query-event", count,
            self.notified(events, content, call.caller), content, to_instant(now_us()),
            error))

    def _ws_token(self, call: OperationCall) -> OperationResult:
        ids = self._ids(call)
        for sid in ids:
            resource = self._readable(call, sid)
            if (resource.get("channel") or {}).get("type") != "websocket":
                raise CoreError(422, "invalid", f"Subscription/{sid} does not use the "
                                "websocket channel", expression=["Subscription.channel.type"])
        token = secrets.token_urlsafe(32)
        expires = now_us() + TOKEN_LIFETIME * 1_000_000
        self.queue.set_token(ids, _token_hash(token), expires)
        base = call.caller.base or self.base
        ws = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        return OperationResult({"resourceType": "Parameters", "parameter": [
            {"name": "token", "valueString": token},
            {"name": "expiration", "valueDateTime": to_instant(expires)},
            *({"name": "subscription", "valueString": sid} for sid in ids),
            {"name": "websocket-url", "valueUrl": f"{ws}/subscription-ws"}]})

    # ------------------------------------------------------------ the websocket channel

    def bind(self, token: str) -> list[str]:
        """The subscriptions a binding token names (empty: unknown or expired)."""
        return self.queue.bound(_token_hash(token), now_us())

    def handshake(self, subscription_id: str) -> dict[str, Any] | None:
        """A websocket's handshake for one bound subscription; a ``requested`` one becomes
        active (the client is there to receive)."""
        row = self.queue.channel(subscription_id)
        if row is None:
            return None
        self.set_status(subscription_id, "active", only_from="requested")
        config = self._config(row.config)
        return self.notification(subscription_id, config, "handshake", int(row.events), [],
                                 row.owner)

    def since(self, subscription_id: str, after: int, idle: float
              ) -> tuple[int, dict[str, Any] | None]:
        """(the last event number, the notification of events after ``after``, or a
        heartbeat when nothing was sent for ``idle`` seconds, at least the heartbeat period;
        or None)."""
        row = self.queue.channel(subscription_id)
        if row is None or row.status == "off":
            return after, None
        config = self._config(row.config)
        count = int(row.events)
        if count > after:
            last = min(count, after + config.max_count)
            events = self.queue.events(subscription_id, after + 1, last, config.max_count)
            return last, self.notification(subscription_id, config, "event-notification",
                                           count, events, row.owner)
        if config.heartbeat and idle >= config.heartbeat:
            return after, self.notification(subscription_id, config, "heartbeat", count, [],
                                            row.owner)
        return after, None
