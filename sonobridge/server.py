"""The HTTP application: ``create_app(settings)`` returns the Starlette app for uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sonobridge.config import Settings
from sonobridge.core import Core, open_core
from sonobridge.fhir.routes import FhirApp
from sonobridge.middleware import BodyLimitMiddleware, RequestContextMiddleware
from sonobridge.store import migrate

log = logging.getLogger("sonobridge.server")


def create_app(settings: Settings, core: Core | None = None) -> Starlette:
    """Build the app. Opens the core (and migrates) unless one is given."""
    core = core or open_core(settings)
    fhir = FhirApp(core.fhir, configured_base=settings.base_url,
                   max_body=settings.max_body_size,
                   bundle_max_entries=settings.bundle_max_entries,
                   db_threads=settings.worker_threads)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        checks = await run_in_threadpool(_readiness, core)
        ready = all(v == "ok" for v in checks.values())
        return Response(orjson.dumps({"status": "ready" if ready else "not ready",
                                      "checks": checks}),
                        200 if ready else 503, media_type="application/json")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        core.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            *fhir.mount("/fhir"),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(BodyLimitMiddleware, max_body=settings.max_body_size),
        ],
        lifespan=lifespan,
    )
    app.state.core = core
    app.state.fhir = fhir
    return app


def _readiness(core: Core) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        core.store.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        checks["migrations"] = "ok" if migrate.is_current(core.engine) else "behind"
    except Exception as exc:
        checks["migrations"] = f"unknown: {type(exc).__name__}"
    try:
        core.blobs.ping()
        checks["blobs"] = "ok"
    except OSError as exc:
        checks["blobs"] = f"unavailable: {exc}"
    return checks
