"""Partial indexes on the search index's sparse columns: a reference's absolute URL and
identifier, a token's text. Most rows hold NULL there (an SR's Observations write about 270
reference rows each, none with a URL or an identifier); a partial index ``WHERE col IS NOT
NULL`` skips those rows' index updates on every write, and the searches on these columns (an
equality or a range) imply NOT NULL, so they still use it. The quantity value index keeps a
plain parameter's rows only (``WHERE grp IS NULL``): composites are found from their first
component, and the searches that use it say so.

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

PARTIAL = (("idx_reference", "url", '"url" IS NOT NULL'),
           ("idx_reference", "ident_value", '"ident_value" IS NOT NULL'),
           ("idx_token", "text", '"text" IS NOT NULL'),
           ("idx_quantity", "value", "grp IS NULL"))


def _recreate(partial: bool) -> None:
    for table, column, condition in PARTIAL:
        name = f"ix_{table}_res_type_param_{column}"
        op.drop_index(name, table_name=table)
        where = {}
        if partial:
            where = {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}
        op.create_index(name, table, ["res_type", "param", column], **where)


def upgrade() -> None:
    _recreate(partial=True)


def downgrade() -> None:
    _recreate(partial=False)
