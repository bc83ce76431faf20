"""A bare Starlette endpoint that answers every read from memory: the ceiling for a FHIR read.

Run by bench/fhir_rest.py with the same uvicorn settings as `sonobridge serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = Path(sys.argv[2]).read_bytes()
HEADERS = {"ETag": 'W/"1"', "Last-Modified": "Fri, 27 Nov 2026 00:00:00 GMT"}


async def read(request: Request) -> Response:
    return Response(BODY, 200, HEADERS, media_type="application/fhir+json; charset=utf-8")


async def health(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/fhir/{type}/{id}", read), Route("/healthz", health)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, server_header=False)
