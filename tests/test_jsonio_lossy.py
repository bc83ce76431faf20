"""The lossy-number check of ``jsonio`` (which bytes go to the exact, slower parser) decides
exactly as the plain alternation it replaced: the same answer on random number-like text."""

from __future__ import annotations

import random
import re

from sonobridge import jsonio

PLAIN = re.compile(rb"\.[0-9]*0[\s,\]}]|[0-9][eE][-+]?[0-9]|[0-9.]{16,}")


def test_same_decision_as_the_plain_alternation() -> None:
    rnd = random.Random(15)
    alphabet = b'0123456789.eE+-,]} \n"a:'
    for _ in range(50_000):
        text = bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 40)))
        assert bool(jsonio._LOSSY_NUMBER.search(text)) == bool(PLAIN.search(text)), text


def test_lossy_numbers_stay_exact() -> None:
    assert str(jsonio.loads(b'{"v": 1.50}')["v"]) == "1.50"
    assert str(jsonio.loads(b'{"v": 1e2}')["v"]) == "1E+2"
    assert str(jsonio.loads(b'{"v": 0.12345678901234567}')["v"]) == "0.12345678901234567"
    assert jsonio.loads(b'{"v": 1.5, "s": "2026-11-01T10:00:00.1+08:00"}')["v"] == 1.5
