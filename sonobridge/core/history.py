"""History at instance, type and system level, as a ``history`` Bundle with paging links."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from sonobridge.core import access
from sonobridge.core.errors import FhirError
from sonobridge.core.search.dates import parse_period
from sonobridge.store.resources import HistoryKey, StoredResource
from sonobridge.store.timeutil import to_instant

if TYPE_CHECKING:
    from sonobridge.core.resources import FhirRequest, FhirResponse, FhirService

DEFAULT_COUNT = 100


def history(service: FhirService, req: FhirRequest) -> FhirResponse:
    from sonobridge.core.resources import FhirResponse

    since = at = after = None
    count = DEFAULT_COUNT
    for name, value in req.query:
        if name == "_since":
            since = parse_period(value, "_since")[0]
        elif name == "_at":
            at = parse_period(value, "_at")
        elif name == "_count":
            if not value.isdigit():
                raise FhirError(400, "invalid", "_count must be a non-negative integer",
                                expression=["_count"])
            count = int(value)
            if count > service.history_page_max:
                raise FhirError(400, "invalid", f"_count may be at most "
                                f"{service.history_page_max}", expression=["_count"])
        elif name == "_page":
            try:
                after = HistoryKey.decode(value)
            except ValueError as exc:
                raise FhirError(400, "invalid", str(exc), expression=["_page"]) from None
    policy = req.policy
    if req.res_type is not None and req.res_id is not None:
        service._may(req, None, "r")
        if service.store.read(req.res_type, req.res_id) is None:
            raise FhirError(404, "not-found", f"{req.res_type}/{req.res_id} is not known")
    elif req.res_type is not None:
        access.require(policy, req.res_type, "r")
    page, next_key = service.store.history(res_type=req.res_type, res_id=req.res_id,
                                           since=since, at=at, after=after, count=max(count, 1))
    if not policy.unrestricted and req.res_id is None:
        # Type and system history: only the entries whose resource the caller may read (as it
        # is now); a page can come back shorter, its next link still continues the walk.
        assert service.engine is not None
        with service.store.reader.connect() as conn:
            allowed = access.visible(service.engine, conn, policy, req.base, "r",
                                     {(s.type, s.id) for s in page})
        page = [s for s in page if (s.type, s.id) in allowed]
    if count == 0:
        page, next_key = [], None
    path = "/".join(p for p in (req.res_type, req.res_id) if p)
    self_url = f"{req.base}/{path + '/' if path else ''}_history"
    kept = [(k, v) for k, v in req.query if k != "_page"]
    links = [{"relation": "self", "url": _url(self_url, req.query)}]
    if next_key is not None:
        links.append({"relation": "next",
                      "url": _url(self_url, [*kept, ("_page", next_key.encode())])})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": to_instant(page[0].last_updated) if page else None},
        "link": links,
        "entry": [_entry(req.base, stored) for stored in page],
    }
    if bundle["meta"]["lastUpdated"] is None:
        del bundle["meta"]
    if not bundle["entry"]:
        del bundle["entry"]
    return FhirResponse(200, bundle)


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
