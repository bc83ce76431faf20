"""Passwords (argon2id) and the TOTP second factor (RFC 6238, via pyotp).

The password policy follows GB/T 22239 level 3 practice (long enough, several kinds of
character, not the user name) and NIST SP 800-63B (not a known common or breached password):
at least 12 characters, and not guessable by zxcvbn (Dropbox's estimator, which ships the 30,000
most common passwords of public breaches as data, and sees ``Password123`` through its
capital and digits).
"""

from __future__ import annotations

import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MIN_SCORE = 3  # zxcvbn: 3 is "safely unguessable" (about 10^8 guesses)
_hasher = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile
# A hash to verify against when the user does not exist, so timing does not reveal that.
_DUMMY = _hasher.hash("sonobridge-no-such-user")


class PasswordPolicyError(ValueError):
    """The password does not meet the policy; the message says why."""


def check_policy(password: str, username: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_LENGTH} characters")
    kinds = sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                 any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))
    if kinds < 3:
        raise PasswordPolicyError("a password needs three of: lower case, upper case, digits, "
                                  "symbols")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("a password may not contain the user name")
    from zxcvbn import zxcvbn

    found = zxcvbn(password[:100], user_inputs=[username, "sonobridge"])
    if found["score"] < MIN_SCORE:
        hint = (found.get("feedback") or {}).get("warning") or "it is too easy to guess"
        raise PasswordPolicyError(f"this password is too easy to guess ({hint}); a longer "
                                  "phrase of unrelated words is better")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="SonoBridge")


def totp_step(secret: str, code: str, last_step: int | None, now: float | None = None
              ) -> int | None:
    """The time step ``code`` belongs to (one step of clock drift either way), or ``None``.

    A code from a step at or before ``last_step`` (the last one accepted) is a replay and is
    refused, even though it is still inside its validity window.
    """
    code = code.strip().replace(" ", "")
    if not code.isdecimal() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    current = int(now) // totp.interval
    for step in (current - 1, current, current + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            if last_step is not None and step <= last_step:
                return None
            return step
    return None
