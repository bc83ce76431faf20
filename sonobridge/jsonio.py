"""FHIR JSON in and out, without losing a decimal's precision.

FHIR says the precision of a decimal is significant (``1.50`` is not ``1.5``) and decimals may be
larger than a float can hold. orjson is fast but parses every number with a fraction as a binary
float. So: orjson when the bytes hold no number a float would change (almost always), and the
standard library with ``Decimal`` otherwise. On the way out, orjson cannot write a ``Decimal``
as a bare number, so each one is written as a unique placeholder string that is then replaced by
the literal. No library does both halves, hence this module.
"""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any

import orjson

# A fraction ending in 0, an exponent, or a long run of digits: a float would not keep it exactly.
# Every branch starts at a digit or a point, so that one character class is tried first (twice
# as fast as the plain alternation, which tried each branch at every byte of every resource).
_LOSSY_NUMBER = re.compile(
    rb"[0-9.](?:(?<=\.)[0-9]*0[\s,\]}]|(?<=[0-9])[eE][-+]?[0-9]|[0-9.]{15,})")


class JSONError(ValueError):
    """The bytes are not JSON; the message says where."""


def _parse_int(text: str) -> int | Decimal:
    # orjson and FHIR integers are 64-bit at most; a longer literal is a decimal without a point.
    return int(text) if len(text) < 19 else Decimal(text)


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping decimal literals exact."""
    raw = data.encode() if isinstance(data, str) else data
    if not _LOSSY_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JSONError(str(exc)) from None
    try:
        return json.loads(raw, parse_float=Decimal, parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JSONError(str(exc)) from None


MAX_DEPTH = 64  # nested objects and arrays: FHIR resources need a fraction of this
MAX_NUMBER = 40  # characters of one number literal (FHIR decimals have at most 18 digits)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONError(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return out


def _number(text: str) -> int | Decimal:
    if len(text) > MAX_NUMBER:
        raise JSONError(f"a number of {len(text)} characters ({text[:20]}…)")
    value = Decimal(text)
    if not value.is_finite() or abs(value.adjusted()) > 308:
        raise JSONError(f"the number {text[:40]} is out of range")
    if "." not in text and "e" not in text.lower() and len(text) < 19:
        return int(text)
    return value


def _constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON number")


def loads_strict(data: bytes | str) -> Any:
    """Parse untrusted JSON (request bodies): as ``loads``, and refuse what a lenient parser
    lets through: a key twice in one object (which one is meant?), ``NaN`` and infinities,
    numbers of absurd length or range (``1e999999``, 100,000 digits), nesting deeper than
    ``MAX_DEPTH``."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        value = json.loads(raw, object_pairs_hook=_pairs, parse_float=_number,
                           parse_int=_number, parse_constant=_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JSONError(str(exc)) from None
    except RecursionError:
        raise JSONError(f"nested more than {MAX_DEPTH} levels deep") from None
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JSONError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


def dumps(obj: Any, *, pretty: bool = False, sort_keys: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON, writing ``Decimal`` values as literals;
    ``sort_keys``: object keys in code point order at every level (a canonical form)."""
    option = (orjson.OPT_INDENT_2 if pretty else 0) | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    literals: list[str] = []
    nonce = ""

    def default(value: Any) -> Any:
        nonlocal nonce
        if isinstance(value, Decimal):
            if not nonce:
                nonce = secrets.token_hex(8)
            literals.append(_decimal_literal(value))
            return f"\x00{nonce}:{len(literals) - 1}"
        raise TypeError(f"cannot serialise {type(value).__name__}")

    out = orjson.dumps(obj, default=default, option=option)
    if not literals:
        return out
    pattern = re.compile(rb'"\\u0000' + nonce.encode() + rb":([0-9]+)\"")
    return pattern.sub(lambda m: literals[int(m.group(1))].encode(), out)


def _decimal_literal(value: Decimal) -> str:
    if not value.is_finite():
        raise TypeError("NaN and infinity are not JSON numbers")
    return str(value)
