"""Decimal-exact JSON: what goes in comes out with the same number literals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sonobridge import jsonio


@pytest.mark.parametrize("literal", [b"1.50", b"0.0", b"100000000000000000000",
                                     b"-3.14159265358979323846", b"12", b"1.5", b"2.000"])
def test_literals_survive(literal):
    assert jsonio.dumps(jsonio.loads(b'{"v":' + literal + b"}")) == b'{"v":' + literal + b"}"


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_any_decimal_round_trips(value: Decimal):
    text = f'{{"v":{value:f}}}'.encode()
    assert jsonio.dumps(jsonio.loads(text)) == text


def test_strings_that_look_like_placeholders_are_left_alone():
    data = {"a": Decimal("1.10"), "b": "\x00deadbeef:0"}
    assert jsonio.loads(jsonio.dumps(data)) == data


def test_malformed():
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(b"{nope")
    with pytest.raises(jsonio.JSONError):
        jsonio.loads(b'{"a": 1.50,')
