"""HL7 v2 messages: the inbound log (idempotent by control id) and the outbound queue.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("peer", sa.String(255), nullable=False),
        sa.Column("sending_app", sa.String(227), nullable=False),
        sa.Column("sending_facility", sa.String(227), nullable=False),
        sa.Column("control_id", sa.String(199), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("charset", sa.String(32), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ack", sa.LargeBinary, nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("destination", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt", sa.BigInteger, nullable=True),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hl7_messages"),
        sa.UniqueConstraint("direction", "sending_app", "sending_facility", "control_id",
                            name="uq_hl7_messages_control"),
    )
    op.create_index("ix_hl7_messages_queue", "hl7_messages",
                    ["direction", "status", "next_attempt"])


def downgrade() -> None:
    op.drop_table("hl7_messages")
