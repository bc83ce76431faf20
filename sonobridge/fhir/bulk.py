"""The Bulk Data status and file URLs: ``/fhir/$export-status/{job}`` (GET polls, DELETE
cancels) and ``/fhir/$export-file/{job}/{name}`` (an NDJSON file, streamed from the blob store,
so any worker serves a file whichever ran the job).

The kick-off is an ordinary operation (``core/export``); these two URLs are not operations
(DELETE, and a file that is not a FHIR resource), so they are routes of their own, mounted
before the FHIR router. The core decides who may see what (the job's owner only); this module
only speaks HTTP.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sonobridge.core.errors import CoreError
from sonobridge.core.events import Answered
from sonobridge.core.export import FILES_PATH, STATUS_PATH, ExportService
from sonobridge.core.policy import Caller
from sonobridge.fhir.formats import JSON, render
from sonobridge.fhir.routes import error_response, policy_of
from sonobridge.web.baseurl import base_url

NDJSON = "application/fhir+ndjson"


class BulkRoutes:
    def __init__(self, service: ExportService, configured_base: str | None) -> None:
        self.service = service
        self.configured_base = configured_base

    def routes(self, prefix: str = "/fhir") -> list[Route]:
        return [Route(f"{prefix}{STATUS_PATH}{{job}}", self.status, methods=["GET", "DELETE"],
                      name="fhir:export-status"),
                Route(f"{prefix}{FILES_PATH}{{job}}/{{name}}", self.file, methods=["GET"],
                      name="fhir:export-file")]

    def _caller(self, request: Request) -> Caller:
        base = base_url(request.headers, request.url.scheme, self.configured_base,
                        request.scope.get("server")) + "/fhir"
        return Caller(policy_of(request), base,
                      request.client.host if request.client else "")

    async def status(self, request: Request) -> Response:
        try:
            caller = self._caller(request)
            job = request.path_params["job"]
            if request.method == "DELETE":
                answer = await anyio.to_thread.run_sync(self.service.cancel, caller, job)
            else:
                answer = await anyio.to_thread.run_sync(self.service.status, caller, job)
        except CoreError as exc:
            return error_response(exc, JSON)
        if answer.body is None:
            return Response(b"", answer.status, answer.headers)
        media = "application/json" if answer.status == 200 else JSON.content_type
        return Response(render(answer.body, JSON), answer.status, answer.headers,
                        media_type=media)

    async def file(self, request: Request) -> Response:
        try:
            caller = self._caller(request)
            job, name = request.path_params["job"], request.path_params["name"]
            chunks, size = await anyio.to_thread.run_sync(self.service.file, caller, job, name)
        except CoreError as exc:
            return error_response(exc, JSON)
        events = self.service.core.events
        if events.wants(Answered):
            events.emit(Answered(caller, "rest", "R", "bulk-data export file",
                                 resource=name.split("-", 1)[0], query=f"job={job}"))
        return StreamingResponse(chunks, 200, media_type=NDJSON,
                                 headers={"Content-Length": str(size)})
