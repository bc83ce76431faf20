"""The HTTP application: ``create_app(settings)`` returns the Starlette app for uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sonobridge.app.compose import open_app_core
from sonobridge.app.status import status_endpoint
from sonobridge.auth.guard import BearerGuard
from sonobridge.auth.service import AuthService
from sonobridge.auth.web import AuthWeb
from sonobridge.config import Settings
from sonobridge.conformance.capability import capability_statement
from sonobridge.core.events import Answered
from sonobridge.core.export import service_of as export_service_of
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.roles import role_allows
from sonobridge.core.services import Core
from sonobridge.core.subscriptions import service_of
from sonobridge.core.subscriptions.topics import advertise as advertise_topics
from sonobridge.dicomweb.routes import DicomWebApp
from sonobridge.dicomweb.wado_uri import wado_uri
from sonobridge.fhir.bulk import BulkRoutes
from sonobridge.fhir.formats import FORMATS, PATCH_FORMATS
from sonobridge.fhir.interactions import Interactions
from sonobridge.fhir.routes import FhirApp, served_interactions
from sonobridge.fhir.websocket import SubscriptionSocket
from sonobridge.hie.dimse.proxy import Proxy
from sonobridge.hie.xds.endpoints import routes as xds_routes
from sonobridge.store import migrate
from sonobridge.store.timeutil import now_us, to_instant
from sonobridge.web.middleware import (
    BodyLimitMiddleware,
    FhirGZipMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedProxyMiddleware,
)

log = logging.getLogger("sonobridge.app.server")


def create_app(settings: Settings, core: Core | None = None, *, listeners: bool = False,
               auth: AuthService | None = None) -> Starlette:
    """Build the app. Opens the core (and migrates) unless one is given. With ``listeners``
    (``sonobridge serve``), its lifespan also runs the MLLP and DIMSE listeners."""
    core = core or open_app_core(settings)
    auth = auth or AuthService(settings, core.engine)
    published = to_instant(now_us())

    def capability(base: str) -> dict[str, Any]:
        statement = capability_statement(base, served_interactions(), published, core.search,
                                         formats=FORMATS, patch_formats=PATCH_FORMATS,
                                         operations=core.operations.all())
        if service_of(core) is not None:  # the Backport's topic canonicals on Subscription
            advertise_topics(statement)
        return statement

    fhir = FhirApp(Interactions(core.resources), configured_base=settings.base_url,
                   max_body=settings.max_body_size,
                   bundle_max_entries=settings.bundle_max_entries,
                   db_threads=settings.worker_threads, capability=capability,
                   operations=core.operations)

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

    subscriptions = service_of(core)
    exports = export_service_of(core)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if listeners:  # ``app/listeners.py``: per process, and once per cluster
                from sonobridge.app import listeners as cluster

                async with cluster.run(app, core, subscriptions):
                    yield
            else:
                yield
        finally:
            core.close()

    dicomweb = DicomWebApp(core, configured_base=settings.base_url,
                           threads=settings.worker_threads, remote=Proxy(core))
    def may_pick(user: Any) -> bool:
        """Only a role that may read patients sees the picker's names or picks one."""
        return role_allows(user.role, "Patient", "r")

    auth_web = AuthWeb(auth, settings.base_url,
                       patients=lambda user: core.patients.recent() if may_pick(user) else [],
                       patient_exists=lambda user, pid: may_pick(user) and
                       core.resources.exists("Patient", pid),
                       audit=lambda *args: _audit_auth(core, *args))
    middleware = [Middleware(RequestContextMiddleware),
                  Middleware(SecurityHeadersMiddleware),
                  Middleware(TrustedProxyMiddleware, trusted=settings.trusted_networks),
                  Middleware(FhirGZipMiddleware)]
    if settings.cors_origins:
        # Outside the guard, so that a 401 reaches a browser app with its CORS headers.
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=settings.cors_origins.split(","),
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"], expose_headers=["ETag", "Location", "Content-Location",
                                                 "Warning", "X-Request-ID", "Content-Range",
                                                 "WWW-Authenticate"],
            max_age=600))
    middleware += [
        Middleware(BearerGuard, auth=auth, configured_base=settings.base_url),
        # DICOM uploads stream to disk under their own per-object limit.
        Middleware(BodyLimitMiddleware, max_body=settings.max_body_size,
                   exempt=("/dicomweb/",)),
    ]
    app = Starlette(
        routes=[
            Route("/", status_endpoint(core), methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            *auth_web.routes(),
            # Before the /fhir mount, which would take the websocket scope too.
            *([SubscriptionSocket(subscriptions).route()] if subscriptions else []),
            # Bulk Data status and file URLs (not operations: DELETE, and NDJSON files).
            *(BulkRoutes(exports, settings.base_url).routes() if exports else []),
            *fhir.mount("/fhir"),
            *dicomweb.routes(),
            Route("/wado", wado_uri(dicomweb), methods=["GET", "HEAD"]),
            *xds_routes(core),  # IHE XDS.b/XDS-I.b SOAP endpoints and WSDL (hie/xds)
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.core = core
    app.state.auth = auth
    app.state.fhir = fhir
    app.state.dicomweb = core.archive
    return app


def _audit_auth(core: Core, kind: str, ok: bool, user: Any, client_id: str, site: Any,
                detail: dict[str, Any]) -> None:
    """Logins, logouts and token events into the audit trail."""
    if not core.events.wants(Answered):
        return
    subtype = kind
    if kind == "token":
        subtype = {"refresh_token": "refresh", "authorization_code": "token-issue",
                   "client_credentials": "token-issue"}.get(detail.get("grant_type", ""),
                                                            "token")
    description = ", ".join(f"{k}={v}" for k, v in sorted(detail.items()) if v)
    patient = detail.get("patient")
    policy = Policy(subject=str(user.id) if user is not None else client_id,
                    client_id=client_id, fhir_user=getattr(user, "fhir_user", None))
    caller = Caller(policy, "", site.ip,
                    username=getattr(user, "username", None) or detail.get("username"))
    core.events.emit(Answered(caller, kind, "E", subtype, outcome="0" if ok else "4",
                              patient=f"Patient/{patient}" if patient else None,
                              detail=description[:500]))


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
