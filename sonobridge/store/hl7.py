"""The HL7 v2 message log (``hl7_messages``): every message received, kept raw with its ACK,
and the results queued to go out. Rows only; the rules are the core's (``core/messages.py``)
and the MLLP edge's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from sonobridge.store.tables import hl7_messages as M

# Built once: composing these per message cost a tenth of the message (SQLAlchemy's statement
# construction and cache-key work, measured with pyinstrument).
_SEEN = select(M.c.id, M.c.ack).where(
    M.c.direction == "in", M.c.sending_app == bindparam("app"),
    M.c.sending_facility == bindparam("facility"), M.c.control_id == bindparam("control"))
_INSERT = insert(M)
_UPDATE = update(M).where(M.c.id == bindparam("row_id"))


def seen(conn: Connection, key: dict[str, str]) -> tuple[int, bytes | None] | None:
    """(row id, stored ACK) of an inbound message with this (app, facility, control) key."""
    row = conn.execute(_SEEN, key).first()
    if row is None:
        return None
    return row.id, bytes(row.ack) if row.ack is not None else None


def log_message(conn: Connection, row_id: int | None, values: dict[str, Any]) -> None:
    """Insert a message row (``row_id`` None) or update the one there."""
    if row_id is None:
        conn.execute(_INSERT, values)
    else:
        conn.execute(_UPDATE, {"row_id": row_id, **values})
