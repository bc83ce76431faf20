"""The DICOM forwarding queue (routing rules to remote AEs, with retry).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dicom_forwards",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_dicom_forwards_due", "dicom_forwards", ["status", "next_attempt"])


def downgrade() -> None:
    op.drop_table("dicom_forwards")
