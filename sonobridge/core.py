"""The core every edge calls: database engine, resource store, blob store, FHIR service.

One ``Core`` per process, opened from the settings; the HTTP app and the commands share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from sonobridge.config import Settings
from sonobridge.fhir.service import FhirService
from sonobridge.store import migrate
from sonobridge.store.blobs import FileBlobStore, open_blob_store
from sonobridge.store.db import make_engine
from sonobridge.store.resources import ResourceStore


@dataclass
class Core:
    settings: Settings
    engine: Engine
    store: ResourceStore
    blobs: FileBlobStore
    fhir: FhirService

    def close(self) -> None:
        self.engine.dispose()


def open_core(settings: Settings, *, run_migrations: bool = True) -> Core:
    """Connect, bring the schema up to date (unless told not to) and build the services."""
    engine = make_engine(settings.resolved_database_url)
    if run_migrations:
        migrate.upgrade(engine)
    store = ResourceStore(engine)
    blobs = open_blob_store(settings.resolved_blob_url)
    service = FhirService(store, history_page_max=settings.history_page_max)
    return Core(settings, engine, store, blobs, service)
