"""The DICOMweb edge of the PACS proxy: ``/dicomweb/peers/{AET}/…`` (see hie/dimse/proxy.py).

Searches go to the peer; any other path first brings the study (series, instance) here by
C-GET (or C-MOVE, for a peer configured with ``retrieve=move``), then is answered by the local
DICOMweb routes, with their access checks.
"""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from sonobridge.core.access import Access
from sonobridge.core.errors import CoreError
from sonobridge.core.imaging.remote import RemoteArchive
from sonobridge.core.policy import Caller, Policy
from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.errors import body as error_body

_PATH = re.compile(r"^/dicomweb/peers/([^/]+)/(.+)$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class PeerProxy:
    def __init__(self, app: Any, remote: RemoteArchive | None) -> None:
        self.app = app  # the DicomWebApp
        self._router: Router | None = None
        self.proxy = remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._handle(scope, receive, send)
        except CoreError as exc:
            response = Response(orjson.dumps(error_body(exc)), exc.status,
                                media_type="application/json")
        if response is not None:
            await response(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> Response | None:
        match = _PATH.match(scope["path"])
        if match is None:
            raise DicomwebError(404, "use /dicomweb/peers/{AET}/studies…")
        aet, rest = match.group(1), match.group(2).strip("/")
        self._authorize(scope)
        if self.proxy is None:
            raise DicomwebError(404, "the PACS proxy is not available in this process")
        parts = rest.split("/")
        for uid in parts[1:6:2]:
            if len(uid) > 64 or not _UID.match(uid):
                raise DicomwebError(400, f"{uid!r} is not a valid UID")
        request = Request(scope, receive)
        params = list(request.query_params.multi_items())
        # path segments -> (level, study, series)
        search: dict[tuple[str, ...], tuple[str, str | None, str | None]] = {
            ("studies",): ("studies", None, None)}
        if len(parts) == 3 and parts[0] == "studies" and parts[2] == "series":
            search[tuple(parts)] = ("series", parts[1], None)
        if len(parts) == 5 and parts[0] == "studies" and parts[2] == "series" and \
                parts[4] == "instances":
            search[tuple(parts)] = ("instances", parts[1], parts[3])
        if tuple(parts) in search and scope["method"] in ("GET", "HEAD"):
            level, study, series = search[tuple(parts)]
            found = await anyio.to_thread.run_sync(self.proxy.search, aet, level, params,
                                                   study, series)
            if not found:
                return Response(b"", 204)
            return Response(orjson.dumps(found), 200, media_type="application/dicom+json")
        if parts[0] != "studies" or len(parts) < 2 or scope["method"] not in ("GET", "HEAD"):
            raise DicomwebError(405, "the PACS proxy answers GET searches and retrievals")
        study = parts[1]
        series = parts[3] if len(parts) > 3 and parts[2] == "series" else None
        sop = parts[5] if len(parts) > 5 and parts[4] == "instances" else None
        caller = Caller(scope["state"]["policy"], "", (scope.get("client") or [""])[0])
        await anyio.to_thread.run_sync(self.proxy.fetch, caller, aet, study, series, sop)
        local = dict(scope)
        local["path"] = "/dicomweb/" + rest
        local["raw_path"] = local["path"].encode()
        local["root_path"] = ""
        if self._router is None:
            self._router = Router(routes=self.app.routes())
        await self._router(local, receive, send)
        return None

    @staticmethod
    def _authorize(scope: Scope) -> None:
        """A remote PACS has no ImagingStudy to check access against before a fetch: the
        proxy is for tokens that may read and search every ImagingStudy (no patient or
        query restriction)."""
        policy = scope.get("state", {}).get("policy")
        if not isinstance(policy, Policy):
            raise DicomwebError(401, "no authorization decision was made for this request")
        if not Access.every_study(policy):
            raise DicomwebError(403, "the PACS proxy needs user/ or system/ read and "
                                "search rights on ImagingStudy without restrictions")
