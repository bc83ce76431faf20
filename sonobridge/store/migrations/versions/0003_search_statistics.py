"""PostgreSQL extended statistics on the search index tables.

Every index row carries (res_type, param), and the two are strongly dependent (a parameter
belongs to a few types). Without telling the planner, it multiplies their selectivities and
underestimates matches by an order of magnitude, then picks hash joins and full sorts where an
ordered index scan would stop after a page. SQLite has no equivalent and needs none here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity",
          "idx_uri")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"CREATE STATISTICS IF NOT EXISTS stx_{table} (dependencies, mcv) "
                   f"ON res_type, param FROM {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP STATISTICS IF EXISTS stx_{table}")
