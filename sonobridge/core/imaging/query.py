"""QIDO-RS: search studies, series and instances by their attributes (PS3.18 10.6).

Matching follows PS3.4 C.2.2.2: single values, ``*`` and ``?`` wildcards, UID lists (``\\`` or
``,``), date and time ranges, universal matching, and with ``fuzzymatching=true`` person names
match per component, by prefix, ignoring case and accents, in every component group (so a
Chinese name matches on its ideographic or its phonetic form). Keys this server cannot match on
are ignored and named in a ``Warning: 299`` header, as the standard asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, Connection, Row, Table, and_, func, literal, or_, select

from sonobridge.core.errors import bad_request
from sonobridge.core.imaging.metadata import (
    BASE,
    INSTANCE_DEFAULT,
    SERIES_DEFAULT,
    STUDY_DEFAULT,
)
from sonobridge.store.dicom.index import PN_GROUPS
from sonobridge.store.normalize import normalize
from sonobridge.store.tables import dicom_instances as I
from sonobridge.store.tables import dicom_series as S
from sonobridge.store.tables import dicom_studies as ST

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000  # an offset scans what it skips: deeper paging asks for narrower keys
CONTROL = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}

# A row of the index at a query's level: the study, series or instance columns, by name (the
# series and instance levels with the study's, and the series', attributes joined).
IndexRow = Row[*tuple[Any, ...]]
# What a matching key is matched on: (table, column, kind).
MatchKey = tuple[Table, str, str]

# tag -> (table, column, kind); kind: uid, text, pn, date, time, int, modalities
STUDY_KEYS: dict[str, MatchKey] = {
    "0020000D": (ST, "study_uid", "uid"), "00100020": (ST, "patient_id", "text"),
    "00100010": (ST, "patient_name", "pn"), "00080020": (ST, "study_date", "date"),
    "00080030": (ST, "study_time", "time"), "00080050": (ST, "accession_number", "text"),
    "00200010": (ST, "study_id", "text"), "00080061": (ST, "modalities", "modalities"),
    "00080090": (ST, "referring_physician", "pn"), "00081030": (ST, "study_description", "text"),
    "00100030": (ST, "patient_birth_date", "date"), "00100040": (ST, "patient_sex", "text"),
}
SERIES_KEYS: dict[str, MatchKey] = {
    "0020000E": (S, "series_uid", "uid"), "00080060": (S, "modality", "text"),
    "00200011": (S, "series_number", "int"), "0008103E": (S, "series_description", "text"),
    "00080021": (S, "series_date", "date"), "00080031": (S, "series_time", "time"),
    "00180015": (S, "body_part", "text"),
}
INSTANCE_KEYS: dict[str, MatchKey] = {
    "00080018": (I, "sop_uid", "uid"), "00080016": (I, "sop_class_uid", "uid"),
    "00200013": (I, "instance_number", "int"), "00280010": (I, "rows", "int"),
    "00280011": (I, "columns", "int"), "00280008": (I, "number_of_frames", "int"),
}
LEVELS = {"study": (STUDY_KEYS,), "series": (STUDY_KEYS, SERIES_KEYS),
          "instance": (STUDY_KEYS, SERIES_KEYS, INSTANCE_KEYS)}


@dataclass
class Query:
    level: str
    matches: list[tuple[str, str]] = field(default_factory=list)  # (tag, value)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    warnings: list[str] = field(default_factory=list)


def tag_of(key: str) -> str | None:
    """``PatientName`` or ``00100010`` -> ``00100010`` (``None`` when neither)."""
    if not key:
        return None  # pydicom's dictionary has entries without a keyword
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return key.upper()
    tag = tag_for_keyword(key)
    return f"{tag:08X}" if tag is not None else None


def parse_query(level: str, params: Sequence[tuple[str, str]]) -> Query:
    query = Query(level)
    known: dict[str, Any] = {}
    for keys in LEVELS[level]:
        known.update(keys)
    for name, value in params:
        if name == "limit" or name == "offset":
            if not (value.isascii() and value.isdecimal()):
                raise bad_request(f"{name} must be a non-negative integer")
            number = int(value) if len(value) <= 10 else MAX_OFFSET + 1
            if name == "limit" and number > MAX_LIMIT:
                raise bad_request(f"limit may be at most {MAX_LIMIT}")
            if name == "offset" and number > MAX_OFFSET:
                raise bad_request(f"offset may be at most {MAX_OFFSET:,}: page by narrower "
                                  "matching instead")
            setattr(query, name, number)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise bad_request("fuzzymatching must be true or false")
            query.fuzzy = value.lower() == "true"
        elif name == "includefield":
            for item in value.replace("\\", ",").split(","):
                item = item.strip()
                if not item:
                    continue
                if item == "all":
                    query.include_all = True
                    continue
                tag = tag_of(item.split(".")[0])
                if tag is None:
                    raise bad_request(f"includefield: unknown attribute {item!r}")
                query.include.add(tag)
        elif name in CONTROL:
            continue
        else:
            tag = tag_of(name.split(".")[0])
            if tag is None:
                raise bad_request(f"unknown attribute {name!r}: use a keyword "
                                    "(PatientName) or a tag (00100010)")
            query.include.add(tag)
            if tag not in known:
                keyword = keyword_for_tag(int(tag, 16)) or tag
                query.warnings.append(f"{keyword} is not supported for matching and was ignored")
                continue
            if "." in name:
                query.warnings.append(f"{name}: sequence matching is not supported")
                continue
            query.matches.append((tag, value))
    return query


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _range(column: ColumnElement[Any], value: str, width: int, tag: str) -> ColumnElement[bool]:
    low, dash, high = value.partition("-")
    for part in (low, high):
        if part and not part.replace(".", "").isdecimal():
            raise bad_request(f"{keyword_for_tag(int(tag, 16))}: malformed value "
                                f"{value!r} (expected {'YYYYMMDD' if width == 8 else 'HHMMSS'}"
                                " or a range a-b)")
    if width == 8 and any(part and len(part) != 8 for part in (low, high)):
        raise bad_request(f"{keyword_for_tag(int(tag, 16))}: dates are YYYYMMDD, "
                            f"got {value!r}")
    if not dash:
        return column == low if width == 8 else column.like(f"{low}%")
    conds = []
    if low:
        conds.append(column >= low)
    if high:
        conds.append(column <= (high + "999999.999999"[len(high):] if width != 8 else high))
    return and_(*conds) if conds else literal(True)


def _match(table: Table, column_name: str, kind: str, value: str, fuzzy: bool, tag: str
           ) -> ColumnElement[bool] | None:
    if value == "":
        return None  # universal matching
    column = table.c[column_name]
    if kind == "uid":
        uids = [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()]
        return column.in_(uids)
    if kind == "date":
        return _range(column, value, 8, tag)
    if kind == "time":
        return _range(column, value, 6, tag)
    if kind == "int":
        numbers = [v for v in value.replace("\\", ",").split(",") if v.strip()]
        if not all(v.strip().lstrip("-").isdecimal() for v in numbers):
            raise bad_request(f"{keyword_for_tag(int(tag, 16))}: expected an integer")
        return column.in_([int(v) for v in numbers])
    if kind == "modalities":
        # stored as |US|SR|: one LIKE per wanted modality
        modalities = [v.strip().upper() for v in value.replace("\\", ",").split(",")
                      if v.strip()]
        return or_(*(column.like(f"%|{_like(o)}|%", escape="\\") for o in modalities))
    if kind == "pn":
        if fuzzy and column_name == "patient_name":
            words = [normalize(w) for w in value.replace("^", " ").replace("=", " ")
                     .replace("*", " ").split() if normalize(w)]
            norm = table.c["patient_name_norm"]
            return and_(*(norm.like(f"%|{_like(w)}%", escape="\\") for w in words))
        return _person_name(table, column_name, value)
    values = [v for v in value.replace("\\", ",").split(",")] if "," in value else [value]
    options = [column.like(_like(v), escape="\\") if ("*" in v or "?" in v) else column == v
               for v in values]
    return or_(*options)




def _person_name(table: Table, column_name: str, value: str) -> ColumnElement[bool] | None:
    """PN matching per component group (case-insensitive), where the index keeps the groups
    apart (``patient_name_alphabetic`` …): ``张*`` matches ``Zhang^Wei=张^伟`` by its
    ideographic group, ``Zhang^Wei`` by its alphabetic one. A value with ``=`` matches group by
    group (an empty group matches anything); one without matches any group. Elsewhere the
    whole value is matched."""
    if value.strip("*") == "":
        return None  # "*" alone is universal matching (PS3.4 C.2.2.2.4)
    found = [table.c.get(f"{column_name}_{group}") for group in PN_GROUPS]
    columns = [column for column in found if column is not None]
    if len(columns) != len(found):
        return func.lower(table.c[column_name]).like(_like(value.lower()), escape="\\")

    def matches(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return func.lower(column).like(_like(pattern.lower()), escape="\\")

    if "=" not in value:
        return or_(*(matches(column, value) for column in columns))
    wanted = [(column, part) for column, part in zip(columns, value.split("=")[:3], strict=False)
              if part.strip("*")]
    return and_(*(matches(column, part) for column, part in wanted)) if wanted else None


def run(conn: Connection, query: Query, *, study_uid: str | None = None,
        series_uid: str | None = None, allowed: set[str] | None = None,
        after: int | None = None) -> Sequence[IndexRow]:
    """Rows for the query at its level (with the study row joined for series and instances),
    in the order of their ``id``; ``after``: only rows past that id (paging by key)."""
    if query.level == "study":
        stmt = select(ST).select_from(ST)
        order = ST.c.id
    elif query.level == "series":
        stmt = select(S, ST.c.attrs.label("study_attrs")).select_from(
            S.join(ST, ST.c.study_uid == S.c.study_uid))
        order = S.c.id
    else:
        stmt = select(I.c.id, I.c.sop_uid, I.c.series_uid, I.c.study_uid, I.c.metadata,
                      S.c.attrs.label("series_attrs"), ST.c.attrs.label("study_attrs"),
                      S.c.num_instances).select_from(
            I.join(S, S.c.series_uid == I.c.series_uid).join(ST, ST.c.study_uid == I.c.study_uid))
        order = I.c.id
    keys: dict[str, MatchKey] = {}
    for table_keys in LEVELS[query.level]:
        keys.update(table_keys)
    for tag, value in query.matches:
        table, column, kind = keys[tag]
        condition = _match(table, column, kind, value, query.fuzzy, tag)
        if condition is not None:
            stmt = stmt.where(condition)
    if study_uid is not None:
        stmt = stmt.where(ST.c.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(S.c.series_uid == series_uid)
    if allowed is not None:  # the studies the caller's token may see
        stmt = stmt.where(ST.c.study_uid.in_(sorted(allowed)))
    if after is not None:
        stmt = stmt.where(order > after)
    stmt = stmt.order_by(order).limit(query.limit).offset(query.offset)
    return conn.execute(stmt).all()


def _wanted(query: Query, defaults: frozenset[str]) -> set[str] | None:
    return None if query.include_all else set(defaults) | query.include


def _filtered(data: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    if wanted is None:
        return data
    return {tag: value for tag, value in data.items() if tag in wanted}


def study_result(row: IndexRow, query: Query) -> dict[str, Any]:
    data = orjson.loads(row.attrs)
    modalities = [m for m in (row.modalities or "").split("|") if m]
    data["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    data["00201206"] = {"vr": "IS", "Value": [row.num_series]}
    data["00201208"] = {"vr": "IS", "Value": [row.num_instances]}
    data["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    data["00081190"] = {"vr": "UR", "Value": [f"{BASE}/studies/{row.study_uid}"]}
    return _filled(_filtered(data, _wanted(query, STUDY_DEFAULT)), query)


def series_result(row: IndexRow, query: Query) -> dict[str, Any]:
    data = orjson.loads(row.study_attrs) if query.include or query.include_all else {}
    data.update(orjson.loads(row.attrs))
    data["0020000D"] = {"vr": "UI", "Value": [row.study_uid]}
    data["0020000E"] = {"vr": "UI", "Value": [row.series_uid]}
    data["00201209"] = {"vr": "IS", "Value": [row.num_instances]}
    data["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    data["00081190"] = {"vr": "UR", "Value": [
        f"{BASE}/studies/{row.study_uid}/series/{row.series_uid}"]}
    return _filled(_filtered(data, _wanted(query, SERIES_DEFAULT)), query)


def instance_result(row: IndexRow, query: Query) -> dict[str, Any]:
    data = {}
    if query.include or query.include_all:
        data.update(orjson.loads(row.study_attrs))
        data.update(orjson.loads(row.series_attrs))
    data.update(orjson.loads(row.metadata))
    data["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    data["00081190"] = {"vr": "UR", "Value": [
        f"{BASE}/studies/{row.study_uid}/series/{row.series_uid}/instances/{row.sop_uid}"]}
    if query.include_all:
        data.pop("7FE00010", None)
    return _filled(_filtered(data, _wanted(query, INSTANCE_DEFAULT)), query)


def _filled(data: dict[str, Any], query: Query) -> dict[str, Any]:
    """Requested attributes the object lacks come back empty (zero length), in tag order."""
    for tag in query.include:
        if tag not in data:
            try:
                vr = dictionary_VR(int(tag, 16))
            except KeyError:
                vr = "UN"
            data[tag] = {"vr": vr.split(" ")[0]}
    return dict(sorted(data.items()))
