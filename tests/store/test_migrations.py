"""Migrations: they build exactly the tables the code declares, on both databases."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

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



PARTIAL = {"ix_idx_reference_res_type_param_url": "url IS NOT NULL",
           "ix_idx_reference_res_type_param_ident_value": "ident_value IS NOT NULL",
           "ix_idx_token_res_type_param_text": "text IS NOT NULL",
           "ix_idx_quantity_res_type_param_value": "grp IS NULL"}


def _where(conn, name: str) -> str | None:
    """The index's condition as plain words (SQLite keeps the DDL's quotes, PostgreSQL adds
    parentheses), or None when it has none."""
    if conn.dialect.name == "sqlite":
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?",
                                   (name,)).scalar_one()
    else:
        sql = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = %(n)s "
                                   "AND schemaname = current_schema()", {"n": name}).scalar_one()
    _, found, where = sql.partition(" WHERE ")
    return where.translate(str.maketrans("", "", '"()')) if found else None


def test_partial_indexes_and_the_searches_that_use_them(core):
    """A reference's URL and identifier and a token's text are NULL in most rows, and a
    composite's quantities are never searched by value: their indexes skip those rows
    (migration 0013), and the searches on them still use the index."""
    with core.engine.connect() as conn:
        assert {name: _where(conn, name) for name in PARTIAL} == PARTIAL
        if conn.dialect.name != "sqlite":
            return
        for table, condition, params, index in (
                ("idx_reference", "url = ?", ("http://x/Patient/1",), "_url"),
                ("idx_reference", "ident_value = ?", ("X1",), "_ident_value"),
                ("idx_token", "text >= ? AND text < ?", ("liv", "liw"), "_text"),
                ("idx_quantity", "value > ? AND grp IS NULL", (5.0,), "_value")):
            plan = conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN SELECT rid FROM {table} WHERE res_type = ? AND param = ? "
                f"AND {condition}", ("Observation", "subject", *params)).all()
            assert f"USING INDEX ix_{table}_res_type_param{index} " in plan[0][-1], plan


def test_downgrade_from_0013_restores_full_indexes(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    cfg = migrate._config()
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
        conn.commit()
        assert {name: _where(conn, name) for name in PARTIAL} == dict.fromkeys(PARTIAL)
    assert migrate.upgrade(engine) == ("0012", migrate.head_revision())
    engine.dispose()
