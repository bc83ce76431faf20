"""Topic-based subscriptions (R4 Subscriptions Backport): the per-subscription delivery queue
and event counter, and the numbered events ``$events`` reads back.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscription_channels",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("delivered", sa.BigInteger, nullable=False),
        sa.Column("heartbeat", sa.Integer, nullable=False),
        sa.Column("heartbeat_due", sa.BigInteger, nullable=False),
        sa.Column("config", sa.LargeBinary, nullable=False),
        sa.Column("owner", sa.LargeBinary, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("token_expires", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("subscription_id", name="uq_subscription_channels_subscription"),
    )
    op.create_index("ix_subscription_channels_due", "subscription_channels",
                    ["status", "next_attempt"])
    op.create_index("ix_subscription_channels_topic", "subscription_channels",
                    ["topic", "status"])
    op.create_table(
        "subscription_events",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("focus", sa.String(200), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("subscription_id", "number",
                            name="uq_subscription_events_number"),
    )


def downgrade() -> None:
    op.drop_table("subscription_events")
    op.drop_table("subscription_channels")
