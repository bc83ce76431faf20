"""TOTP seeds are kept sealed (AES-GCM, the key beside the signing keys): the column grows to
hold the sealed form.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auth_users") as batch:
        batch.alter_column("totp_secret", type_=sa.String(255), existing_type=sa.String(64),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("auth_users") as batch:
        batch.alter_column("totp_secret", type_=sa.String(64), existing_type=sa.String(255),
                           existing_nullable=True)
