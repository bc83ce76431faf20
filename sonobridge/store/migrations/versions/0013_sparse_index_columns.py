"""Partial indexes on the search index's sparse columns: a reference's absolute URL and
identifier, a token's text. Most rows hold NULL there (an SR's Observations write about 270
reference rows each, none with a URL or an identifier); a partial index ``WHERE col IS NOT
NULL`` skips those rows' index updates on every write, and the searches on these columns (an
equality or a range) imply NOT NULL, so they still use it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SPARSE = (("idx_reference", "url"), ("idx_reference", "ident_value"), ("idx_token", "text"))


def _recreate(partial: bool) -> None:
    for table, column in SPARSE:
        name = f"ix_{table}_res_type_param_{column}"
        op.drop_index(name, table_name=table)
        where = {}
        if partial:
            condition = sa.text(f'"{column}" IS NOT NULL')
            where = {"sqlite_where": condition, "postgresql_where": condition}
        op.create_index(name, table, ["res_type", "param", column], **where)


def upgrade() -> None:
    _recreate(partial=True)


def downgrade() -> None:
    _recreate(partial=False)
