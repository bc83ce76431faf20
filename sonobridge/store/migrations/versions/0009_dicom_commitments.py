"""Storage Commitment requests, kept until their N-EVENT-REPORT is delivered (with retry).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dicom_commitments",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("transaction_uid", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(16), nullable=False),
        sa.Column("items", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_dicom_commitments_due", "dicom_commitments", ["status", "next_attempt"])


def downgrade() -> None:
    op.drop_table("dicom_commitments")
