"""Topic-based FHIR subscriptions (the Subscriptions R5 Backport IG for R4).

``attach(core)`` (listed in ``core/domains.py``) validates Subscription writes, records events
in the transaction of the change that triggers them, and registers ``$status``, ``$events``
and ``$get-ws-binding-token``. The channels are the FHIR edge's (the core speaks no HTTP): the
rest-hook sender (``fhir/resthook.py``), started by the app with the other queue senders, and
the websocket endpoint (``fhir/websocket.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sonobridge.core.subscriptions.service import Subscriptions

if TYPE_CHECKING:
    from sonobridge.core.services import Core


def attach(core: Core) -> None:
    service = Subscriptions(core)
    service.attach()
    # The Core has no field per domain: the app and the websocket edge find it here.
    setattr(core, "_subscriptions", service)  # noqa: B010


def service_of(core: Core) -> Subscriptions | None:
    """The subscriptions attached to this core (None when the domain is not listed)."""
    service = getattr(core, "_subscriptions", None)
    return service if isinstance(service, Subscriptions) else None
