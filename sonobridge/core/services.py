"""The core every edge calls: database engine, resource store, blob store, FHIR service.

One ``Core`` per process, opened from the settings; the HTTP app and the commands share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from sonobridge.auth.service import AuthService
from sonobridge.config import Settings
from sonobridge.core.audit import AuditTrail
from sonobridge.core.resources import FhirService
from sonobridge.core.search.engine import SearchEngine
from sonobridge.core.search.registry import Registry
from sonobridge.store import migrate
from sonobridge.store.blobs import FileBlobStore, open_blob_store
from sonobridge.store.db import Checkpointer, is_sqlite, make_engine
from sonobridge.store.resources import ResourceStore


@dataclass
class Core:
    settings: Settings
    engine: Engine
    store: ResourceStore
    blobs: FileBlobStore
    fhir: FhirService
    registry: Registry
    search: SearchEngine
    auth: AuthService
    audit: AuditTrail | None  # None only when turned off (tests, benchmarks)
    forwarder: Any = None  # DICOM routing rules (hie/dimse/forward.py), when configured
    checkpointer: Checkpointer | None = None  # SQLite: WAL checkpoints off the commit path

    def close(self) -> None:
        if self.audit is not None:
            self.audit.flush()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()


def open_core(settings: Settings, *, run_migrations: bool = True) -> Core:
    """Connect, bring the schema up to date (unless told not to) and build the services."""
    engine = make_engine(settings.resolved_database_url, background_checkpoints=True)
    checkpointer = Checkpointer(engine) if is_sqlite(engine) else None
    if run_migrations:
        migrate.upgrade(engine)
    registry = Registry()
    store = ResourceStore(engine, indexer=registry.index_rows)
    blobs = open_blob_store(settings.resolved_blob_url)
    search = SearchEngine(store, registry, default_count=settings.search_default_count,
                          max_count=settings.search_max_count,
                          max_includes=settings.search_max_includes)
    service = FhirService(store, search, history_page_max=settings.history_page_max)
    audit = AuditTrail(store, syslog=settings.audit_syslog) if settings.audit else None
    service.audit = audit
    core = Core(settings, engine, store, blobs, service, registry, search,
                AuthService(settings, engine), audit, checkpointer=checkpointer)
    if checkpointer is not None:
        checkpointer.start()
    if run_migrations or migrate.is_current(engine):
        load_custom_search_params(core)
    if settings.dicom_forward:
        from sonobridge.hie.dimse.forward import Forwarder

        core.forwarder = Forwarder(core)
    if settings.sends_results:
        from sonobridge.hie.mllp.outbound import ResultsOutbox

        store.hooks.append(ResultsOutbox(core))
    store.after_commit.append(
        lambda writer: load_custom_search_params(core)
        if "SearchParameter" in writer.types_written else None)
    return core


def load_custom_search_params(core: Core) -> None:
    """Make active SearchParameter resources stored here searchable (for new writes)."""
    from sqlalchemy import and_, select

    from sonobridge import jsonio
    from sonobridge.store.tables import resource_versions as V
    from sonobridge.store.tables import resources as R

    stmt = select(V.c.content, R.c.last_updated).select_from(
        R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id))).where(
        R.c.res_type == "SearchParameter", R.c.deleted.is_(False))
    with core.store.reader.connect() as conn:
        rows = conn.execute(stmt).all()
    stamp = max((row.last_updated for row in rows), default=None)
    core.registry.set_custom((jsonio.loads(row.content) for row in rows), stamp)
