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
from sonobridge.auth.guard import BearerGuard
from sonobridge.auth.service import AuthService
from sonobridge.auth.web import AuthWeb
from sonobridge.config import Settings
from sonobridge.conformance.capability import capability_statement
from sonobridge.core.events import Answered
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.roles import role_allows
from sonobridge.core.services import Core
from sonobridge.dicomweb.routes import DicomWebApp
from sonobridge.dicomweb.wado_uri import wado_uri
from sonobridge.fhir.formats import FORMATS, PATCH_FORMATS
from sonobridge.fhir.interactions import Interactions
from sonobridge.fhir.routes import FhirApp, served_interactions
from sonobridge.hie.dimse.proxy import Proxy
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
        return capability_statement(base, served_interactions(), published, core.search,
                                    formats=FORMATS, patch_formats=PATCH_FORMATS)

    fhir = FhirApp(Interactions(core.resources), configured_base=settings.base_url,
                   max_body=settings.max_body_size,
                   bundle_max_entries=settings.bundle_max_entries,
                   db_threads=settings.worker_threads, capability=capability)

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
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if listeners:
            from sonobridge.app import warmup

            warmup.start(core)
        mllp = None
        if listeners and settings.mllp_port:
            from sonobridge.hie.mllp.listener import MllpListener

            mllp = MllpListener(core, settings.mllp_host, settings.mllp_port,
                                settings.hl7_max_message_size)
            await mllp.start()
        app.state.mllp = mllp
        outbox = None
        if listeners and settings.sends_results:
            from sonobridge.hie.mllp.outbound import OutboxSender

            outbox = OutboxSender(core)
            outbox.start()
        dimse = None
        if listeners and settings.dicom_port:
            from sonobridge.hie.dimse.scp import DimseServer

            dimse = DimseServer(core)
            dimse.start()
        app.state.dimse = dimse
        forwards = None
        if listeners and settings.dicom_forward:
            from sonobridge.hie.dimse.forward import ForwardSender

            forwards = ForwardSender(core)
            forwards.start()
        try:
            yield
        finally:
            if mllp is not None:
                await mllp.stop()
            if outbox is not None:
                outbox.stop()
            if dimse is not None:
                dimse.stop()
            if forwards is not None:
                forwards.stop()
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
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            *auth_web.routes(),
            *fhir.mount("/fhir"),
            *dicomweb.routes(),
            Route("/wado", wado_uri(dicomweb), methods=["GET", "HEAD"]),
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
