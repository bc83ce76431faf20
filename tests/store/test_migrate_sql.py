"""`sonobridge migrate --sql`: the statements an upgrade would run on PostgreSQL, for a DBA to
review, without running them; refused where a migration must read the data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.store import migrate
from sonobridge.store.db import make_engine
from tests.conftest import PG_URL, REQUIRE_PG, pg_reason

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_database() -> Iterator[str]:
    reason = pg_reason()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"sbsql_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_sql_of_the_pending_migrations(empty_database: str, tmp_path):
    engine = make_engine(empty_database)
    try:
        # From an empty database the path crosses a data migration: refused, clearly.
        with pytest.raises(ValueError, match="reads the data"):
            migrate.upgrade_sql(engine)
        migrate.upgrade(engine, "0011")
        sql = migrate.upgrade_sql(engine)
        assert "CREATE TABLE" in sql and "UPDATE alembic_version" in sql
        assert migrate.current_revision(engine) == "0011"  # nothing was run
        result = CliRunner().invoke(app, ["migrate", "--sql"], env={
            "SONOBRIDGE_DATABASE_URL": empty_database, "SONOBRIDGE_DATA_DIR": str(tmp_path)})
        assert result.exit_code == 0 and result.output == sql
        migrate.upgrade(engine)
        assert "CREATE TABLE" not in migrate.upgrade_sql(engine)  # current: nothing to do
    finally:
        engine.dispose()


def test_sqlite_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["migrate", "--sql"], env={
        "SONOBRIDGE_DATA_DIR": str(tmp_path), "SONOBRIDGE_DATABASE_URL": ""})
    assert result.exit_code == 2 and "PostgreSQL" in result.output
