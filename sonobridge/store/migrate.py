"""Run and inspect the Alembic migrations against an engine (no alembic.ini needed)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; every SonoBridge process agrees on it so that only one migrates at a time.
_PG_LOCK_KEY = 0x5E0B_71D6


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def upgrade_sql(engine: Engine) -> str:
    """The SQL that ``upgrade`` would run on this (PostgreSQL) database, without running it:
    for a DBA to review, or to apply by hand where the gateway's account may not change the
    schema. SQLite's migrations rebuild tables in ways only a live connection can."""
    if engine.dialect.name != "postgresql":
        raise ValueError("migrate --sql writes PostgreSQL statements; SQLite is migrated "
                         "by `sonobridge migrate` itself")
    buffer = io.StringIO()
    cfg = Config(output_buffer=buffer)
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["dialect"] = "postgresql"
    start = current_revision(engine)
    try:
        command.upgrade(cfg, f"{start}:head" if start else "head", sql=True)
    except Exception as exc:  # a data migration reads rows: it needs the live database
        raise ValueError(f"the upgrade from {start or 'an empty database'} includes a "
                         f"migration that reads the data ({type(exc).__name__}): it cannot be "
                         "written as SQL; run `sonobridge migrate` (take a backup first)"
                         ) from exc
    return buffer.getvalue()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to ``revision``; returns (before, after). Safe to run from many workers."""
    cfg = _config()
    with engine.connect().execution_options(sqlite_write=True) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            before = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
            after = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
    return before, after
