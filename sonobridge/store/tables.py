"""The tables. Alembic migrations in ``migrations/`` create them; a test keeps the two equal.

Resources are kept as versions: ``resources`` holds one row per logical resource (its current
version number, whether it is deleted), ``resource_versions`` every version's JSON bytes exactly
as served. Times are integer microseconds since the Unix epoch (UTC): portable across SQLite and
PostgreSQL, totally ordered, and exact for ``_since`` comparisons.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content_hash", LargeBinary(32), nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
    Index("ix_resources_type_live", "res_type", "deleted", "rid"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=False),
    Column("version_id", Integer, primary_key=True, autoincrement=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=True),
    ForeignKeyConstraint(["rid"], ["resources.rid"], name="fk_versions_rid_resources"),
    Index("ix_versions_type_updated", "res_type", "last_updated"),
    Index("ix_versions_updated", "last_updated"),
)


# ------------------------------------------------------------------------------ search index
#
# One table per search parameter type, rows extracted on every write in the same transaction
# (derived data: `sonobridge reindex` rebuilds them). ``grp`` ties together the component rows of
# one composite value. Prefix and range matching on text must follow code point order, so those
# columns use the "C" collation on PostgreSQL (SQLite's default BINARY already does).


def _text(length: int) -> String:
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _index_table(name: str, *columns: Column, indexes: tuple[tuple[str, ...], ...]) -> Table:
    table = Table(
        name, metadata,
        Column("rid", RowId, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        Column("grp", SmallInteger, nullable=True),
        # 1: this row holds the lowest value of the parameter for the resource (ascending sort
        # key), 2: the highest (descending), 3: both. One row per resource and direction, so a
        # sort is a join that cannot multiply rows.
        Column("sort", SmallInteger, nullable=True),
        *columns,
    )
    Index(f"ix_{name}_rid", table.c.rid, table.c.param)
    for cols in indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
    return table


idx_string = _index_table(
    "idx_string",
    Column("value", _text(255), nullable=False),
    Column("exact", String(255), nullable=False),
    indexes=(("res_type", "param", "value"),))
idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("text", _text(255), nullable=True),
    indexes=(("res_type", "param", "code", "system"), ("res_type", "param", "text")))
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(255), nullable=True),
    Column("url", String(512), nullable=True),
    Column("ident_system", String(255), nullable=True),
    Column("ident_value", String(255), nullable=True),
    indexes=(("res_type", "param", "target_type", "target_id"),
             ("target_type", "target_id", "res_type", "param"),
             ("res_type", "param", "url"),
             ("res_type", "param", "ident_value")))
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("res_type", "param", "low"), ("res_type", "param", "high")))
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    indexes=(("res_type", "param", "value"),))
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    Column("value", Float, nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    indexes=(("res_type", "param", "value"),))
idx_uri = _index_table(
    "idx_uri",
    Column("uri", _text(512), nullable=False),
    indexes=(("res_type", "param", "uri"),))

INDEX_TABLES: dict[str, Table] = {t.name: t for t in (
    idx_string, idx_token, idx_reference, idx_date, idx_number, idx_quantity, idx_uri)}
