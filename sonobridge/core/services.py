"""The core's services, built once per process from the settings.

``open_core`` connects, migrates, and wires the services together; the app (``app/``) adds
what lives in the edges (the authorization service, the HL7 results outbox and DICOM
forwarding, which listen to core events) and hands the ``Core`` to every edge. Each service
is a typed attribute: an edge asks ``core.resources``, ``core.archive``, ``core.orders``…
for what it needs and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, func, select

from sonobridge import jsonio
from sonobridge.config import Settings
from sonobridge.core.access import Access
from sonobridge.core.audit import AuditTrail
from sonobridge.core.domains import attach_domains
from sonobridge.core.events import Events
from sonobridge.core.imaging.archive import Archive
from sonobridge.core.imaging.ingest import Ingest
from sonobridge.core.imaging.studies import Studies
from sonobridge.core.limits import limits_of
from sonobridge.core.messages import Messages
from sonobridge.core.operations import Operations
from sonobridge.core.orders import Orders
from sonobridge.core.patients import Patients
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import Resources
from sonobridge.core.search.engine import SearchEngine
from sonobridge.core.search.registry import Registry
from sonobridge.periodic import Periodic
from sonobridge.store import migrate
from sonobridge.store.blobs import BlobStore, open_blob_store
from sonobridge.store.db import Checkpointer, is_sqlite, make_engine
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

# The server's own writes (sample data, rebuilt ImagingStudy resources): named in the audit.
SERVER = Policy.system("sonobridge", "sonobridge")


@dataclass
class Core:
    settings: Settings
    engine: Engine
    store: ResourceStore
    blobs: BlobStore
    registry: Registry
    search: SearchEngine
    access: Access
    events: Events
    resources: Resources
    patients: Patients
    studies: Studies
    orders: Orders
    archive: Archive
    ingest: Ingest
    messages: Messages
    audit: AuditTrail | None  # None only when turned off (tests, benchmarks)
    checkpointer: Checkpointer | None = None  # SQLite: WAL checkpoints off the commit path
    # FHIR operations the domains register (``core/domains.py``); the FHIR edge routes $name.
    operations: Operations = field(default_factory=Operations)

    def caller(self, policy: Policy, address: str = "", *, audited: bool = True) -> Caller:
        """A caller without a request to take the base URL from (DIMSE, HL7, commands)."""
        return Caller(policy, self.settings.public_base, address, audited)

    @property
    def server(self) -> Caller:
        """The server itself, for what it writes on its own account."""
        return self.caller(SERVER)

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
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
    blobs = open_blob_store(settings.resolved_blob_url, settings.data_dir / "incoming")
    search = SearchEngine(store, registry, default_count=settings.search_default_count,
                          max_count=settings.search_max_count,
                          max_includes=settings.search_max_includes)
    events = Events()
    access = Access(search, store)
    resources = Resources(store, search, access, events,
                          history_page_max=settings.history_page_max)
    patients = Patients(resources, settings.dicom_patient_id_system,
                        settings.patient_id_issuer)
    studies = Studies(resources, patients, f"{settings.public_root}/dicomweb",
                      settings.hl7_time_zone)
    orders = Orders(resources, patients, studies)
    archive = Archive(store, blobs, studies, settings.dicom_cache_size, limits_of(settings),
                      rendered_dir=settings.data_dir / "cache" / "rendered")
    ingest = Ingest(store, blobs, studies, events, settings.dicom_max_object_size)
    messages = Messages(store, events)
    audit = None
    if settings.audit:
        audit = AuditTrail(store, syslog=settings.audit_syslog,
                           read_window=settings.audit_read_window)
        audit.listen(events)
        if settings.audit_writer == "process":  # started in the background: see use_process
            audit.use_process(settings.resolved_database_url, settings.audit_syslog,
                              wait=False)
    core = Core(settings, engine, store, blobs, registry, search, access, events, resources,
                patients, studies, orders, archive, ingest, messages, audit, checkpointer)
    attach_domains(core)
    if checkpointer is not None:
        checkpointer.start()
    if run_migrations or migrate.is_current(engine):
        load_custom_search_params(core)
    store.after_commit.append(
        lambda writer: load_custom_search_params(core)
        if "SearchParameter" in writer.types_written else None)
    return core


class SearchParamWatch(Periodic):
    """Every second, in every process: custom SearchParameters written by another process
    (another worker, another node on the same PostgreSQL) become searchable here too. One
    indexed query (the newest SearchParameter change and their number) decides whether to
    reload."""

    name = "search-parameters"

    def __init__(self, core: Core, interval: float = 1.0) -> None:
        super().__init__(interval, join_timeout=5)
        self.core = core
        self.seen: tuple[object, ...] | None = None

    def round(self) -> bool:
        with self.core.store.reader.connect() as conn:
            state = tuple(conn.execute(select(func.max(R.c.last_updated), func.count()).where(
                R.c.res_type == "SearchParameter")).one())
        if self.seen is None:
            self.seen = state  # loaded when the core opened
            return False
        if state == self.seen:
            return False
        self.seen = state
        load_custom_search_params(self.core)
        return True


def load_custom_search_params(core: Core) -> None:
    """Make active SearchParameter resources stored here searchable (for new writes)."""
    load_custom_params(core.store, core.registry)


def load_custom_params(store: ResourceStore, registry: Registry) -> None:
    """The same for a store and registry without a core (the audit writer process)."""
    stmt = select(V.c.content, R.c.last_updated).select_from(
        R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id))).where(
        R.c.res_type == "SearchParameter", R.c.deleted.is_(False))
    with store.reader.connect() as conn:
        rows = conn.execute(stmt).all()
    stamp = max((row.last_updated for row in rows), default=None)
    registry.set_custom((jsonio.loads(row.content) for row in rows), stamp)
