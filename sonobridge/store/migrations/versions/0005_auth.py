"""Authorization (users, clients, codes, tokens, sessions, launches) and the audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_users",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("fhir_user", sa.String(128), nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.BigInteger, nullable=True),
        sa.Column("password_changed", sa.BigInteger, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_auth_users"),
        sa.UniqueConstraint("username", name="uq_auth_users_username"),
    )
    op.create_table(
        "auth_clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("client_type", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=True),
        sa.Column("redirect_uris", sa.LargeBinary, nullable=False),
        sa.Column("scope", sa.String(2048), nullable=False),
        sa.Column("jwks", sa.LargeBinary, nullable=True),
        sa.Column("jwks_url", sa.String(512), nullable=True),
        sa.Column("approved", sa.Boolean, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_auth_clients"),
    )
    op.create_table(
        "auth_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("redirect_uri", sa.String(512), nullable=False),
        sa.Column("scope", sa.String(2048), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("context", sa.LargeBinary, nullable=False),
        sa.Column("nonce", sa.String(255), nullable=True),
        sa.Column("auth_time", sa.BigInteger, nullable=False),
        sa.Column("amr", sa.String(64), nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name="pk_auth_codes"),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("scope", sa.String(2048), nullable=False),
        sa.Column("context", sa.LargeBinary, nullable=False),
        sa.Column("refresh_hash", sa.String(64), nullable=True),
        sa.Column("refresh_expires", sa.BigInteger, nullable=True),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.Column("issued", sa.BigInteger, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("grant", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("session_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("jti", name="pk_auth_tokens"),
    )
    op.create_index("ix_auth_tokens_refresh", "auth_tokens", ["refresh_hash"])
    op.create_index("ix_auth_tokens_revoked", "auth_tokens", ["revoked_at"])
    op.create_table(
        "auth_assertions",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_auth_assertions"),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("amr", sa.String(64), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_auth_sessions"),
    )
    op.create_table(
        "auth_launches",
        sa.Column("launch", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=True),
        sa.Column("context", sa.LargeBinary, nullable=False),
        sa.Column("expires", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("launch", name="pk_auth_launches"),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", RowId, primary_key=True, autoincrement=True),
        sa.Column("recorded", sa.BigInteger, nullable=False),
        sa.Column("event", sa.LargeBinary, nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )


def downgrade() -> None:
    for table in ("audit_log", "auth_launches", "auth_sessions", "auth_assertions",
                  "auth_tokens", "auth_codes", "auth_clients", "auth_users"):
        op.drop_table(table)
