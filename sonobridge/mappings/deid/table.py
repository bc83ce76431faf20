"""PS3.15 Table E.1-1 (2024b) as data: the Basic Profile action and every option's action per
attribute, read from the shipped JSON (``ps3.15-table-e1-1.json``, 621 rows, Innolitics, MIT
licence in ``LICENSE-innolitics.txt``), never typed by hand.

``action(tag, options)`` answers what the profile does to one attribute with the options
chosen. Repeating groups are matched as the table writes them: ``(50XX,XXXX)`` curve data,
``(60XX,3000)`` overlay data, ``(60XX,4000)`` overlay comments; private attributes (odd
groups) have their own row.

Where options meet (PS3.15 E.3): an option's column replaces the Basic Profile's action for
the rows it names. When two chosen options name the same row (Retain Device Identity ``K``
and Retain Longitudinal ``K`` on a calibration date), K wins over C: the user asked to keep
it, and the other option's cleaning of the same value cannot be applied to a kept value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from sonobridge.mappings.deid.options import Options

# Columns of the table -> the option (field of ``Options``) that selects them.
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
BASIC_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D",
                           "X/Z/U*"})
PRIVATE = "private"
CURVE = "curve"
OVERLAY_DATA = 0x3000
OVERLAY_COMMENTS = 0x4000


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of Table E.1-1."""

    tag: str  # as the table writes it: "(0010,0010)", "(60XX,3000)"
    name: str
    basic: str  # D, Z, X, K, C, U or a combination (X/Z, Z/D, X/D, X/Z/D, X/Z/U*)
    options: tuple[tuple[str, str], ...]  # (option field, action)
    in_standard_iod: bool

    def action(self, options: Options) -> str:
        chosen = [act for field, act in self.options if getattr(options, field)]
        if "K" in chosen:
            return "K"
        if "C" in chosen:
            return "C"
        return self.basic


@dataclass(frozen=True, slots=True)
class Table:
    by_tag: dict[int, Rule]
    curve: Rule
    overlay_data: Rule
    overlay_comments: Rule
    private: Rule

    def rule(self, tag: int) -> Rule | None:
        """The row for a (group << 16 | element) tag, repeating groups included."""
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2:
            return self.private
        found = self.by_tag.get(tag)
        if found is not None:
            return found
        if 0x5000 <= group <= 0x501E:
            return self.curve
        if 0x6000 <= group <= 0x601E:
            if element == OVERLAY_DATA:
                return self.overlay_data
            if element == OVERLAY_COMMENTS:
                return self.overlay_comments
        return None


def _rule(row: dict[str, str]) -> Rule:
    basic = row["basicProfile"]
    if basic not in BASIC_ACTIONS:
        raise ValueError(f"Table E.1-1 row {row['tag']}: unknown action {basic!r}")
    options = tuple((OPTION_COLUMNS[column], act) for column, act in sorted(row.items())
                    if column in OPTION_COLUMNS)
    return Rule(row["tag"], row["name"], basic, options, row.get("stdCompIOD") == "Y")


@cache
def table() -> Table:
    """The table, read once from the package data."""
    text = resources.files(__package__).joinpath("ps3.15-table-e1-1.json").read_text("utf-8")
    rows = json.loads(text)
    by_tag: dict[int, Rule] = {}
    special: dict[str, Rule] = {}
    for row in rows:
        tag = row["tag"]
        rule = _rule(row)
        if tag.startswith("(GGGG"):
            special[PRIVATE] = rule
        elif tag == "(50XX,XXXX)":
            special[CURVE] = rule
        elif tag == "(60XX,3000)":
            special["overlay_data"] = rule
        elif tag == "(60XX,4000)":
            special["overlay_comments"] = rule
        else:
            by_tag[int(tag[1:5] + tag[6:10], 16)] = rule
    return Table(by_tag, special[CURVE], special["overlay_data"], special["overlay_comments"],
                 special[PRIVATE])
