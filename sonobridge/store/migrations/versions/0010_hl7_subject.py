"""What an outbound HL7 message reports on (``DiagnosticReport/{id}``), kept apart from its
delivery state: a report that already had a result sent goes out again as a correction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_messages") as batch:
        batch.add_column(sa.Column("subject", sa.String(255), nullable=True))
        batch.create_index("ix_hl7_messages_subject", ["direction", "subject"])


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages") as batch:
        batch.drop_index("ix_hl7_messages_subject")
        batch.drop_column("subject")
