"""The tables. Alembic migrations in ``migrations/`` create them; a test keeps the two equal.

Resources are kept as versions: ``resources`` holds one row per logical resource (its current
version number, whether it is deleted), ``resource_versions`` every version's JSON bytes exactly
as served. Times are integer microseconds since the Unix epoch (UTC): portable across SQLite and
PostgreSQL, totally ordered, and exact for ``_since`` comparisons.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.schema import SchemaItem

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a BIGINT identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content_hash", LargeBinary(32), nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
    Index("ix_resources_type_live", "res_type", "deleted", "rid"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=False),
    Column("version_id", Integer, primary_key=True, autoincrement=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=True),
    ForeignKeyConstraint(["rid"], ["resources.rid"], name="fk_versions_rid_resources"),
    Index("ix_versions_type_updated", "res_type", "last_updated"),
    Index("ix_versions_updated", "last_updated"),
)


# ------------------------------------------------------------------------------ search index
#
# One table per search parameter type, rows extracted on every write in the same transaction
# (derived data: `sonobridge reindex` rebuilds them). ``grp`` ties together the component rows of
# one composite value. Prefix and range matching on text must follow code point order, so those
# columns use the "C" collation on PostgreSQL (SQLite's default BINARY already does).


def _text(length: int) -> String:
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _index_table(name: str, *columns: Column[Any], indexes: tuple[tuple[str, ...], ...],
                 sparse: tuple[str, ...] = (), plain: tuple[str, ...] = ()) -> Table:
    """One search index table. A column in ``sparse`` is NULL in most rows (a reference's
    absolute URL or identifier, a token's text): its index is partial, ``WHERE col IS NOT
    NULL``, so the rows without it cost no index update on write. Every search on such a column
    compares it (``=``, a range), which implies NOT NULL, so both SQLite and PostgreSQL still
    pick the partial index. The index on a column in ``plain`` holds a plain parameter's rows
    only, ``WHERE grp IS NULL``: a composite's rows are found from its first component and
    joined by resource and group, never through it (an SR writes a measurement's value three
    times, once plain and twice for composites); the searches that use it say ``grp IS
    NULL``."""
    table = Table(
        name, metadata,
        Column("rid", RowId, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        Column("grp", SmallInteger, nullable=True),
        # 1: this row holds the lowest value of the parameter for the resource (ascending sort
        # key), 2: the highest (descending), 3: both. One row per resource and direction, so a
        # sort is a join that cannot multiply rows.
        Column("sort", SmallInteger, nullable=True),
        *columns,
    )
    Index(f"ix_{name}_rid", table.c.rid, table.c.param)
    for cols in indexes:
        partial: dict[str, Any] = {}
        if cols[-1] in sparse or cols[-1] in plain:
            where = table.c[cols[-1]].isnot(None) if cols[-1] in sparse else table.c.grp.is_(None)
            partial = {"sqlite_where": where, "postgresql_where": where}
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols), **partial)
    return table


idx_string = _index_table(
    "idx_string",
    Column("value", _text(255), nullable=False),
    Column("exact", String(255), nullable=False),
    indexes=(("res_type", "param", "value"),))
idx_token = _index_table(
    "idx_token",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("text", _text(255), nullable=True),
    indexes=(("res_type", "param", "code", "system"), ("res_type", "param", "text")),
    sparse=("text",))
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(255), nullable=True),
    Column("url", String(512), nullable=True),
    Column("ident_system", String(255), nullable=True),
    Column("ident_value", String(255), nullable=True),
    indexes=(("res_type", "param", "target_type", "target_id"),
             ("target_type", "target_id", "res_type", "param"),
             ("res_type", "param", "url"),
             ("res_type", "param", "ident_value")),
    sparse=("url", "ident_value"))
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=(("res_type", "param", "low"), ("res_type", "param", "high")))
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    indexes=(("res_type", "param", "value"),))
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("unit", String(255), nullable=True),
    Column("value", Float, nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    indexes=(("res_type", "param", "value"),), plain=("value",))
idx_uri = _index_table(
    "idx_uri",
    Column("uri", _text(512), nullable=False),
    indexes=(("res_type", "param", "uri"),))

INDEX_TABLES: dict[str, Table] = {t.name: t for t in (
    idx_string, idx_token, idx_reference, idx_date, idx_number, idx_quantity, idx_uri)}


# ------------------------------------------------------------------------------ DICOM index
#
# One row per study, series and instance, with the attributes QIDO-RS and C-FIND match on.
# ``attrs`` holds the level's DICOM JSON (patient+study, or series attributes) for answers;
# an instance's ``metadata`` is its whole DICOM JSON with bulk data as relative BulkDataURIs.
# ``frames`` is the frame table (JSON: per frame, the (offset, length) ranges in the file).

dicom_studies = Table(
    "dicom_studies",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("patient_name", String(324), nullable=True),
    Column("patient_name_norm", _text(324), nullable=True),
    # The component groups of patient_name, each matched on its own (PS3.5 6.2.1)
    Column("patient_name_alphabetic", String(324), nullable=True),
    Column("patient_name_ideographic", String(324), nullable=True),
    Column("patient_name_phonetic", String(324), nullable=True),
    Column("patient_birth_date", String(8), nullable=True),
    Column("patient_sex", String(16), nullable=True),
    Column("study_date", String(8), nullable=True),
    Column("study_time", String(16), nullable=True),
    Column("accession_number", String(64), nullable=True),
    Column("study_id", String(16), nullable=True),
    Column("study_description", String(64), nullable=True),
    Column("referring_physician", String(324), nullable=True),
    Column("modalities", String(128), nullable=True),
    Column("num_series", Integer, nullable=False),
    Column("num_instances", Integer, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("attrs", LargeBinary, nullable=False),
    UniqueConstraint("study_uid", name="uq_dicom_studies_uid"),
    Index("ix_dicom_studies_patient_id", "patient_id"),
    Index("ix_dicom_studies_date", "study_date"),
    Index("ix_dicom_studies_accession", "accession_number"),
    Index("ix_dicom_studies_name", "patient_name_norm"),
)

dicom_series = Table(
    "dicom_series",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("series_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("series_description", String(64), nullable=True),
    Column("series_date", String(8), nullable=True),
    Column("series_time", String(16), nullable=True),
    Column("body_part", String(16), nullable=True),
    Column("num_instances", Integer, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("attrs", LargeBinary, nullable=False),
    UniqueConstraint("series_uid", name="uq_dicom_series_uid"),
    Index("ix_dicom_series_study", "study_uid"),
)

dicom_instances = Table(
    "dicom_instances",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("sop_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("transfer_syntax", String(64), nullable=False),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("number_of_frames", Integer, nullable=True),
    Column("blob_key", String(512), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("metadata", LargeBinary, nullable=False),
    Column("frames", LargeBinary, nullable=True),
    UniqueConstraint("sop_uid", name="uq_dicom_instances_uid"),
    Index("ix_dicom_instances_series", "series_uid", "instance_number"),
    Index("ix_dicom_instances_study", "study_uid"),
)


# ------------------------------------------------------------------------------ authorization

auth_users = Table(
    "auth_users",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("fhir_user", String(128), nullable=True),
    Column("totp_secret", String(255), nullable=True),  # sealed (auth/secrets.py)
    Column("totp_last_step", BigInteger, nullable=True),
    Column("disabled", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=True),
    Column("password_changed", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    UniqueConstraint("username", name="uq_auth_users_username"),
)

auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("client_type", String(32), nullable=False),
    Column("secret_hash", String(255), nullable=True),
    Column("redirect_uris", LargeBinary, nullable=False),
    Column("scope", String(2048), nullable=False),
    Column("jwks", LargeBinary, nullable=True),
    Column("jwks_url", String(512), nullable=True),
    Column("approved", Boolean, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("created", BigInteger, nullable=False),
)

auth_codes = Table(
    "auth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("redirect_uri", String(512), nullable=False),
    Column("scope", String(2048), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("context", LargeBinary, nullable=False),
    Column("nonce", String(255), nullable=True),
    Column("auth_time", BigInteger, nullable=False),
    Column("amr", String(64), nullable=False),
    Column("expires", BigInteger, nullable=False),
)

auth_tokens = Table(
    "auth_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", BigInteger, nullable=True),
    Column("scope", String(2048), nullable=False),
    Column("context", LargeBinary, nullable=False),
    Column("refresh_hash", String(64), nullable=True),
    Column("refresh_expires", BigInteger, nullable=True),
    Column("expires", BigInteger, nullable=False),
    Column("issued", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("grant", String(32), nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("session_hash", String(64), nullable=True),
    Index("ix_auth_tokens_refresh", "refresh_hash"),
    Index("ix_auth_tokens_revoked", "revoked_at"),
)

auth_assertions = Table(
    "auth_assertions",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires", BigInteger, nullable=False),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("amr", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
)

auth_launches = Table(
    "auth_launches",
    metadata,
    Column("launch", String(64), primary_key=True),
    Column("user_id", BigInteger, nullable=True),
    Column("context", LargeBinary, nullable=False),
    Column("expires", BigInteger, nullable=False),
)

# The audit trail: append-only, each row chained to the one before by a hash.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("recorded", BigInteger, nullable=False),
    Column("event", LargeBinary, nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


# ------------------------------------------------------------------------------ HL7 v2

# Every HL7 v2 message in or out, stored raw before anything is done with it. Inbound rows are
# unique per (sender, control id): a resend gets the stored ACK and is not applied again.
# Outbound rows are the persistent send queue.
hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("direction", String(3), nullable=False),
    Column("peer", String(255), nullable=False),
    Column("sending_app", String(227), nullable=False),
    Column("sending_facility", String(227), nullable=False),
    Column("control_id", String(199), nullable=False),
    Column("message_type", String(32), nullable=False),
    Column("charset", String(32), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("ack", LargeBinary, nullable=True),
    Column("error", String(1024), nullable=True),
    Column("destination", String(255), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", BigInteger, nullable=True),
    Column("received", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    # What an outbound message reports on (DiagnosticReport/{id}), whatever its delivery state.
    Column("subject", String(255), nullable=True),
    UniqueConstraint("direction", "sending_app", "sending_facility", "control_id",
                     name="uq_hl7_messages_control"),
    Index("ix_hl7_messages_queue", "direction", "status", "next_attempt"),
    Index("ix_hl7_messages_subject", "direction", "subject"),
)


def _send_queue(table: str) -> list[SchemaItem]:
    """What a persistent send queue's rows carry (``store/queues.py`` claims and retries
    them), with the index its senders look up what is due by."""
    return [Column("status", String(16), nullable=False),
            Column("attempts", Integer, nullable=False),
            Column("next_attempt", BigInteger, nullable=False),
            Column("error", String(1024), nullable=True),
            Column("created", BigInteger, nullable=False),
            Column("updated", BigInteger, nullable=False),
            Index(f"ix_{table}_due", "status", "next_attempt")]


# Received DICOM objects waiting to be forwarded to a remote AE (routing rules), with retry.
dicom_forwards = Table(
    "dicom_forwards",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("sop_uid", String(64), nullable=False),
    Column("destination", String(16), nullable=False),
    *_send_queue("dicom_forwards"),
)


# Storage Commitment requests (N-ACTION) until their N-EVENT-REPORT is delivered, with retry.
# ``items`` is the JSON list of [SOP Class UID, SOP Instance UID] pairs asked about.
dicom_commitments = Table(
    "dicom_commitments",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("transaction_uid", String(64), nullable=False),
    Column("requester", String(16), nullable=False),
    Column("items", LargeBinary, nullable=False),
    *_send_queue("dicom_commitments"),
)


# Topic-based FHIR subscriptions (core/subscriptions/, store/subscriptions.py): one row per
# Subscription that is both its delivery state (a send queue: a subscription is delivered in
# event order, so the subscription, not the event, is what a sender claims) and its event
# counter; ``config`` is the JSON the sender needs (endpoint, headers, payload, filters).
subscription_channels = Table(
    "subscription_channels",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("delivered", BigInteger, nullable=False),
    Column("heartbeat", Integer, nullable=False),
    Column("heartbeat_due", BigInteger, nullable=False),
    Column("config", LargeBinary, nullable=False),
    Column("owner", LargeBinary, nullable=False),
    Column("token_hash", String(64), nullable=True),
    Column("token_expires", BigInteger, nullable=True),
    *_send_queue("subscription_channels"),
    UniqueConstraint("subscription_id", name="uq_subscription_channels_subscription"),
    Index("ix_subscription_channels_topic", "topic", "status"),
)

# Each subscription's events, numbered from 1 in the order they were triggered (``$events``
# reads them back; ``focus`` is Type/id/_history/version as it was when triggered).
subscription_events = Table(
    "subscription_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("number", BigInteger, nullable=False),
    Column("focus", String(200), nullable=False),
    Column("created", BigInteger, nullable=False),
    UniqueConstraint("subscription_id", "number", name="uq_subscription_events_number"),
)
