"""Shared fixtures: every store and REST test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``SONOBRIDGE_TEST_POSTGRES_URL`` (default: the local server's ``test``
database). When it does not answer, the PostgreSQL variants skip with the reason, unless
``SONOBRIDGE_TEST_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sonobridge.app.compose import open_app_core as open_core
from sonobridge.config import Settings
from sonobridge.core.services import Core
from sonobridge.store import migrate
from sonobridge.store.db import make_engine, normalise_url

PG_URL = os.environ.get("SONOBRIDGE_TEST_POSTGRES_URL",
                        "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("SONOBRIDGE_TEST_REQUIRE_POSTGRES") == "1"
FIXTURES = Path(__file__).parent / "fixtures"
from sonobridge.store.tables import metadata  # noqa: E402
from tests.s3 import moto_server  # noqa: E402,F401  (a session fixture)

TABLES = tuple(t.name for t in reversed(metadata.sorted_tables))


def _pg_unavailable_reason() -> str | None:
    import psycopg

    try:
        with psycopg.connect(normalise_url(PG_URL).replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}".strip()


_PG_REASON: str | None = None
_PG_CHECKED = False


def pg_reason() -> str | None:
    global _PG_REASON, _PG_CHECKED
    if not _PG_CHECKED:
        _PG_REASON = _pg_unavailable_reason()
        _PG_CHECKED = True
    return _PG_REASON


def _schema_url(schema: str) -> str:
    url = normalise_url(PG_URL)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def pg_schema_url(worker_id: str) -> Iterator[str]:
    """One migrated schema per test worker; tests empty its tables between them."""
    reason = pg_reason()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"SONOBRIDGE_TEST_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    schema = f"sbtest_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _schema_url(schema)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def fresh_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A factory for a database of its own (for module-scoped data sets): returns a URL."""
    made: list[tuple[str, str]] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            target = tmp_path_factory.mktemp("db") / "sonobridge.db"
            shutil.copy(request.getfixturevalue("sqlite_template"), target)
            return f"sqlite:///{target}"
        reason = pg_reason()
        if reason:
            if REQUIRE_PG:
                pytest.fail(f"SONOBRIDGE_TEST_REQUIRE_POSTGRES=1 but {reason}")
            pytest.skip(reason)
        schema = f"sbmod_{uuid.uuid4().hex[:10]}"
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = _schema_url(schema)
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        made.append((schema, url))
        return url

    yield make
    if made:
        admin = make_engine(PG_URL)
        with admin.begin() as conn:
            for schema, _ in made:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        target = tmp_path / "sonobridge.db"
        shutil.copy(template, target)
        yield f"sqlite:///{target}"
        return
    url = request.getfixturevalue("pg_schema_url")
    yield url
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


# ``SONOBRIDGE_TEST_BLOB=s3``: every test's blobs go to a fresh bucket of a real S3 API server
# (moto, tests/s3.py) instead of files — `make test` runs the DICOMweb and DIMSE tests so once.
S3_BLOBS = os.environ.get("SONOBRIDGE_TEST_BLOB") == "s3"


@pytest.fixture
def settings(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    blob_url = None
    if S3_BLOBS:
        from tests.s3 import make_bucket

        endpoint = request.getfixturevalue("moto_server")
        blob_url = f"s3://{make_bucket(endpoint)}/blobs?endpoint={endpoint}&region=us-east-1"
    return Settings(data_dir=tmp_path, database_url=db_url, auth="disabled", audit=False,
                    blob_url=blob_url)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    core = open_core(settings, run_migrations=False)
    yield core
    core.close()


@pytest.fixture
def client(settings: Settings, core: Core) -> Iterator[object]:
    from starlette.testclient import TestClient

    from sonobridge.app.server import create_app

    # From loopback, as a local reverse proxy would call (SONOBRIDGE_TRUSTED_PROXIES).
    with TestClient(create_app(settings, core), base_url="http://sono.test",
                    client=("127.0.0.1", 50000)) as test_client:
        yield test_client
