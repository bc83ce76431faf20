"""Search index tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text(length: int) -> sa.String:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


TABLES = {
    "idx_string": ([sa.Column("value", _text(255), nullable=False),
                    sa.Column("exact", sa.String(255), nullable=False)],
                   [("res_type", "param", "value")]),
    "idx_token": ([sa.Column("system", sa.String(255), nullable=True),
                   sa.Column("code", sa.String(255), nullable=True),
                   sa.Column("text", _text(255), nullable=True)],
                  [("res_type", "param", "code", "system"), ("res_type", "param", "text")]),
    "idx_reference": ([sa.Column("target_type", sa.String(64), nullable=True),
                       sa.Column("target_id", sa.String(255), nullable=True),
                       sa.Column("url", sa.String(512), nullable=True),
                       sa.Column("ident_system", sa.String(255), nullable=True),
                       sa.Column("ident_value", sa.String(255), nullable=True)],
                      [("res_type", "param", "target_type", "target_id"),
                       ("target_type", "target_id", "res_type", "param"),
                       ("res_type", "param", "url"), ("res_type", "param", "ident_value")]),
    "idx_date": ([sa.Column("low", sa.BigInteger, nullable=False),
                  sa.Column("high", sa.BigInteger, nullable=False)],
                 [("res_type", "param", "low"), ("res_type", "param", "high")]),
    "idx_number": ([sa.Column("value", sa.Float, nullable=False)],
                   [("res_type", "param", "value")]),
    "idx_quantity": ([sa.Column("system", sa.String(255), nullable=True),
                      sa.Column("code", sa.String(255), nullable=True),
                      sa.Column("unit", sa.String(255), nullable=True),
                      sa.Column("value", sa.Float, nullable=True),
                      sa.Column("low", sa.Float, nullable=True),
                      sa.Column("high", sa.Float, nullable=True)],
                     [("res_type", "param", "value")]),
    "idx_uri": ([sa.Column("uri", _text(512), nullable=False)], [("res_type", "param", "uri")]),
}


def upgrade() -> None:
    op.create_index("ix_resources_type_live", "resources", ["res_type", "deleted", "rid"])
    for name, (columns, indexes) in TABLES.items():
        op.create_table(
            name,
            sa.Column("rid", RowId, nullable=False),
            sa.Column("res_type", sa.String(64), nullable=False),
            sa.Column("param", sa.String(100), nullable=False),
            sa.Column("grp", sa.SmallInteger, nullable=True),
            sa.Column("sort", sa.SmallInteger, nullable=True),
            *columns,
        )
        op.create_index(f"ix_{name}_rid", name, ["rid", "param"])
        for cols in indexes:
            op.create_index(f"ix_{name}_{'_'.join(cols)}", name, list(cols))


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
    op.drop_index("ix_resources_type_live", "resources")
