"""History at instance, type and system level, as a ``history`` Bundle with paging links."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from sonobridge.core.access import require
from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller
from sonobridge.core.search.dates import parse_period
from sonobridge.store.resources import HistoryKey, StoredResource
from sonobridge.store.timeutil import to_instant

if TYPE_CHECKING:
    from sonobridge.core.resources import Resources

DEFAULT_COUNT = 100


def history(resources: Resources, caller: Caller, res_type: str | None, res_id: str | None,
            params: list[tuple[str, str]]) -> dict[str, Any]:
    """The ``history`` Bundle of an instance, a type, or the whole server."""
    since = at = after = None
    count = DEFAULT_COUNT
    for name, value in params:
        if name == "_since":
            since = parse_period(value, "_since")[0]
        elif name == "_at":
            at = parse_period(value, "_at")
        elif name == "_count":
            if not value.isdecimal() or len(value) > 9:
                raise CoreError(400, "invalid", "_count must be a non-negative integer",
                                expression=["_count"])
            count = int(value)
            if count > resources.history_page_max:
                raise CoreError(400, "invalid", f"_count may be at most "
                                f"{resources.history_page_max}", expression=["_count"])
        elif name == "_page":
            try:
                after = HistoryKey.decode(value)
            except ValueError as exc:
                raise CoreError(400, "invalid", str(exc), expression=["_page"]) from None
    policy = caller.policy
    store = resources.store
    if res_type is not None and res_id is not None:
        resources._target(res_type, res_id)
        resources._may(caller, None, "r", res_type, res_id)
        if store.read(res_type, res_id) is None:
            raise CoreError(404, "not-found", f"{res_type}/{res_id} is not known")
    elif res_type is not None:
        resources._target(res_type)
        require(policy, res_type, "r")
    page, next_key = store.history(res_type=res_type, res_id=res_id, since=since, at=at,
                                   after=after, count=max(count, 1))
    if not policy.unrestricted and res_id is None:
        # Type and system history: only the entries whose resource the caller may read (as it
        # is now); a page can come back shorter, its next link still continues the walk.
        with store.reader.connect() as conn:
            allowed = resources.access.visible(conn, caller, "r",
                                               {(s.type, s.id) for s in page})
        page = [s for s in page if (s.type, s.id) in allowed]
    if not policy.unrestricted:
        # Each version by its own content: a resource moved from patient B to A keeps the
        # versions that were B's out of A's reach.
        page = [s for s in page
                if resources.access.version_visible(caller, s.type, s.id, s.content)]
    if count == 0:
        page, next_key = [], None
    base = caller.base
    path = "/".join(p for p in (res_type, res_id) if p)
    self_url = f"{base}/{path + '/' if path else ''}_history"
    kept = [(k, v) for k, v in params if k != "_page"]
    links = [{"relation": "self", "url": _url(self_url, params)}]
    if next_key is not None:
        links.append({"relation": "next",
                      "url": _url(self_url, [*kept, ("_page", next_key.encode())])})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": to_instant(page[0].last_updated) if page else None},
        "link": links,
        "entry": [_entry(base, stored) for stored in page],
    }
    if bundle["meta"]["lastUpdated"] is None:
        del bundle["meta"]
    if not bundle["entry"]:
        del bundle["entry"]
    return bundle


def _url(base: str, query: list[tuple[str, str]]) -> str:
    return f"{base}?{urlencode(query)}" if query else base


def _entry(base: str, stored: StoredResource) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{base}/{stored.relative_url}"}
    if stored.content is not None:
        entry["resource"] = orjson.Fragment(stored.content)
    if stored.method == "POST":
        request = {"method": "POST", "url": stored.type}
        status = "201 Created"
    elif stored.method == "DELETE":
        request = {"method": "DELETE", "url": stored.relative_url}
        status = "204 No Content"
    else:
        request = {"method": "PUT" if stored.method != "PATCH" else "PATCH",
                   "url": stored.relative_url}
        status = "200 OK"
    entry["request"] = request
    entry["response"] = {"status": status, "etag": stored.etag,
                         "lastModified": stored.last_updated_instant}
    return entry
