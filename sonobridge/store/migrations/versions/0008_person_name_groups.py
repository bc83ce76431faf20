"""Patient names by component group (alphabetic, ideographic, phonetic), so that a query
matches each group on its own: ``张*`` matches ``Zhang^Wei=张^伟``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

GROUPS = ("alphabetic", "ideographic", "phonetic")


def upgrade() -> None:
    with op.batch_alter_table("dicom_studies") as batch:
        for group in GROUPS:
            batch.add_column(sa.Column(f"patient_name_{group}", sa.String(324), nullable=True))
    # Filled from the stored full name here (the same split as the index writes); `sonobridge
    # reindex` would rebuild it from the files too.
    conn = op.get_bind()
    studies = sa.table("dicom_studies", sa.column("id", sa.Integer),
                       sa.column("patient_name", sa.String),
                       *(sa.column(f"patient_name_{group}", sa.String) for group in GROUPS))
    rows = conn.execute(sa.select(studies.c.id, studies.c.patient_name).where(
        studies.c.patient_name.is_not(None))).all()
    for row in rows:
        parts = [*row.patient_name.split("="), "", ""][:3]
        conn.execute(sa.update(studies).where(studies.c.id == row.id).values(
            **{f"patient_name_{group}": part or None for group, part in zip(GROUPS, parts, strict=True)}))


def downgrade() -> None:
    with op.batch_alter_table("dicom_studies") as batch:
        for group in GROUPS:
            batch.drop_column(f"patient_name_{group}")
