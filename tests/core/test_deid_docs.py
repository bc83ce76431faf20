"""docs/training.md says what the code does: its action and option tables are checked
against the shipped Table E.1-1 and the options' CID 7050 codes."""

from __future__ import annotations

import collections
import re
from pathlib import Path

from sonobridge.mappings.deid.options import METHOD_CODES, TEACHING, Options
from sonobridge.mappings.deid.table import table

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def rows() -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in DOC.read_text("utf-8").splitlines() if line.startswith("| ")]


def all_rules():
    tab = table()
    return [*tab.by_tag.values(), tab.curve, tab.overlay_data, tab.overlay_comments,
            tab.private]


def test_action_counts_match_the_table() -> None:
    counts = collections.Counter(rule.basic for rule in all_rules())
    documented = {r[0]: int(r[1]) for r in rows()
                  if len(r) == 3 and re.fullmatch(r"[XDUZKC/*]+", r[0]) and r[1].isdigit()}
    assert documented == {action: counts.get(action, 0) for action in documented}
    assert set(counts) <= set(documented)


def test_option_rows_match_codes_and_counts() -> None:
    documented = {r[0].strip("`"): r for r in rows() if r[0].startswith("`")
                  and r[0].strip("`") in Options.names()}
    assert set(documented) == set(Options.names())
    for name, row in documented.items():
        assert row[1] == METHOD_CODES[name][0], name
        acts = collections.Counter(act for rule in all_rules() for field, act in rule.options
                                   if field == name)
        found = dict((act, int(n)) for n, act in re.findall(r"(\d+) \(([KC])\)", row[2]))
        assert found == dict(acts), name
    text = DOC.read_text("utf-8")
    listed = re.search(r"A teaching case uses (.*?)\n\(", text, re.S)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(TEACHING.chosen())
