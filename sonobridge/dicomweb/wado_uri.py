"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sonobridge.core.errors import CoreError
from sonobridge.dicomweb import rendering
from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.errors import body as error_body

if TYPE_CHECKING:
    from sonobridge.dicomweb.routes import DicomWebApp


def wado_uri(app: DicomWebApp) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            return await _serve(app, request)
        except CoreError as exc:
            return Response(orjson.dumps(error_body(exc)), exc.status,
                            media_type="application/json")

    return endpoint


async def _serve(app: DicomWebApp, request: Request) -> Response:
    from sonobridge.dicomweb.routes import _uid

    query = request.query_params
    if query.get("requestType") != "WADO":
        raise DicomwebError(400, "requestType must be WADO")
    study = _uid(query.get("studyUID", ""), "studyUID")
    series = _uid(query.get("seriesUID", ""), "seriesUID")
    sop = _uid(query.get("objectUID", ""), "objectUID")
    wanted = [c.strip().split(";")[0] for c in query.get("contentType", "image/jpeg").split(",")]
    request.scope["path_params"] = {"study": study}
    await app.authorize(request, search=False)
    row = await app._run(app.service.instance, study, series, sop)
    for media in wanted:
        if media == "application/dicom":
            syntax = query.get("transferSyntax")
            if syntax and syntax != row.transfer_syntax:
                if syntax not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"):
                    raise DicomwebError(406, f"cannot send transfer syntax {syntax}")
                chunks = await app._run(app.service.transcoded, row, syntax)
                return StreamingResponse(chunks, 200, media_type="application/dicom")
            return StreamingResponse(app.service.stream(row), 200,
                                     media_type="application/dicom",
                                     headers={"Content-Length": str(row.size)})
        if media in ("image/jpeg", "image/png", "image/gif"):
            frame = int(query.get("frameNumber", "1") or 1)
            count = row.number_of_frames or 1
            if not 1 <= frame <= count:
                raise DicomwebError(404, f"frame {frame} does not exist (1 to {count})")
            quality = rendering.parse_quality(query.get("imageQuality"))
            columns, rows = query.get("columns"), query.get("rows")
            viewport = (int(columns), int(rows or columns)) if columns and columns.isdecimal() \
                and (not rows or rows.isdecimal()) else None
            window = None
            if query.get("windowCenter") and query.get("windowWidth"):
                window = rendering.parse_window(f"{query['windowCenter']},{query['windowWidth']}")
            data = await app._run(app.service.render, row, media, frame, quality, viewport,
                                  window)
            return Response(data, 200, media_type=media)
    raise DicomwebError(406, "contentType must be application/dicom, image/jpeg, image/png "
                        "or image/gif")
