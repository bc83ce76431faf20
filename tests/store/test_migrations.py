"""Migrations: they build exactly the tables the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sonobridge.store import migrate
from sonobridge.store.tables import metadata


def test_migrations_match_the_declared_tables(core):
    with core.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_schema_is_current_and_upgrade_is_idempotent(core):
    assert migrate.is_current(core.engine)
    before, after = migrate.upgrade(core.engine)
    assert before == after == migrate.head_revision()
