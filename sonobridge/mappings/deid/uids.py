"""UIDs replaced consistently (action U): a keyed HMAC of the original UID, written as a
UUID-derived UID ``2.25.<int>`` (PS3.5 B.2).

Keyed, so nobody without the key can test a guessed original UID against a published one;
deterministic, so every object of a study maps a UID the same way and references between
images, SR, KOS and presentation states still resolve, and re-running gives the same UIDs.
"""

from __future__ import annotations

import hashlib
import hmac


def hmac_uid(key: bytes, uid: str) -> str:
    """``2.25.`` + the 128-bit integer of an RFC 9562 version 8 UUID made from
    HMAC-SHA256(key, uid) (at most 44 characters, within the 64 a UID may have)."""
    digest = bytearray(hmac.new(key, uid.strip().encode("ascii", "replace"),
                                hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
    return f"2.25.{int.from_bytes(digest, 'big')}"


def pseudonym(key: bytes, value: str, prefix: str, length: int = 10) -> str:
    """A stable pseudonym for an identifier (patient ID, AE title): ``prefix`` + upper-case
    hex of the keyed HMAC, short enough for SH/LO/AE values."""
    digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest().upper()
    return prefix + digest[:length]
