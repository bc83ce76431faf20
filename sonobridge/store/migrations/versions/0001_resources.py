"""Versioned FHIR resources.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("rid", RowId, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content_hash", sa.LargeBinary(32), nullable=True),
        sa.PrimaryKeyConstraint("rid", name="pk_resources"),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["res_type", "last_updated"])
    op.create_table(
        "resource_versions",
        sa.Column("rid", RowId, nullable=False, autoincrement=False),
        sa.Column("version_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("last_updated", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("rid", "version_id", name="pk_resource_versions"),
        sa.ForeignKeyConstraint(["rid"], ["resources.rid"], name="fk_versions_rid_resources"),
    )
    op.create_index("ix_versions_type_updated", "resource_versions", ["res_type", "last_updated"])
    op.create_index("ix_versions_updated", "resource_versions", ["last_updated"])


def downgrade() -> None:
    op.drop_table("resource_versions")
    op.drop_table("resources")
