"""DICOM study, series and instance index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text(length: int) -> sa.String:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "dicom_studies",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("patient_name", sa.String(324), nullable=True),
        sa.Column("patient_name_norm", _text(324), nullable=True),
        sa.Column("patient_birth_date", sa.String(8), nullable=True),
        sa.Column("patient_sex", sa.String(16), nullable=True),
        sa.Column("study_date", sa.String(8), nullable=True),
        sa.Column("study_time", sa.String(16), nullable=True),
        sa.Column("accession_number", sa.String(64), nullable=True),
        sa.Column("study_id", sa.String(16), nullable=True),
        sa.Column("study_description", sa.String(64), nullable=True),
        sa.Column("referring_physician", sa.String(324), nullable=True),
        sa.Column("modalities", sa.String(128), nullable=True),
        sa.Column("num_series", sa.Integer, nullable=False),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("attrs", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dicom_studies"),
        sa.UniqueConstraint("study_uid", name="uq_dicom_studies_uid"),
    )
    op.create_index("ix_dicom_studies_patient_id", "dicom_studies", ["patient_id"])
    op.create_index("ix_dicom_studies_date", "dicom_studies", ["study_date"])
    op.create_index("ix_dicom_studies_accession", "dicom_studies", ["accession_number"])
    op.create_index("ix_dicom_studies_name", "dicom_studies", ["patient_name_norm"])
    op.create_table(
        "dicom_series",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("series_number", sa.Integer, nullable=True),
        sa.Column("series_description", sa.String(64), nullable=True),
        sa.Column("series_date", sa.String(8), nullable=True),
        sa.Column("series_time", sa.String(16), nullable=True),
        sa.Column("body_part", sa.String(16), nullable=True),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("attrs", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dicom_series"),
        sa.UniqueConstraint("series_uid", name="uq_dicom_series_uid"),
    )
    op.create_index("ix_dicom_series_study", "dicom_series", ["study_uid"])
    op.create_table(
        "dicom_instances",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer, nullable=True),
        sa.Column("transfer_syntax", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=True),
        sa.Column("columns", sa.Integer, nullable=True),
        sa.Column("number_of_frames", sa.Integer, nullable=True),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.LargeBinary, nullable=False),
        sa.Column("frames", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dicom_instances"),
        sa.UniqueConstraint("sop_uid", name="uq_dicom_instances_uid"),
    )
    op.create_index("ix_dicom_instances_series", "dicom_instances",
                    ["series_uid", "instance_number"])
    op.create_index("ix_dicom_instances_study", "dicom_instances", ["study_uid"])


def downgrade() -> None:
    op.drop_table("dicom_instances")
    op.drop_table("dicom_series")
    op.drop_table("dicom_studies")
