"""``sonobridge.core.imaging.query``: QIDO-RS queries parsed, and run against SQLite.

``tag_of`` (keywords and tags), ``parse_query`` (limit/offset/fuzzymatching validation,
includefield with ``all``, unknown attributes as 400 ``CoreError``s, keys this server does not
match on and sequence keys as warnings, keys per level) without a database; then ``run`` at the
study level on a migrated SQLite database holding three studies, and ``series_result`` with
``includefield=all``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from sqlalchemy import Engine, insert

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging.query import (
    DEFAULT_LIMIT,
    Query,
    parse_query,
    run,
    series_result,
    tag_of,
)
from sonobridge.store.db import make_engine
from sonobridge.store.tables import dicom_studies

# ------------------------------------------------------------------------------ tag_of


@pytest.mark.parametrize("key,tag", [
    ("PatientName", "00100010"),
    ("StudyInstanceUID", "0020000D"),
    ("ReferencedStudySequence", "00081110"),
    ("00100010", "00100010"),
    ("0020000d", "0020000D"),  # hex tags are upper-cased
    ("7fe00010", "7FE00010"),
    ("00091001", "00091001"),  # a private tag is still a tag
    ("patientname", None),  # keywords are case-sensitive
    ("(0010,0010)", None),
    ("0010,0010", None),
    ("0010001", None),
    ("001000100", None),
    ("0010001G", None),
    ("NotAKeyword", None),
])
def test_tag_of(key, tag):
    assert tag_of(key) == tag


def test_tag_of_empty_key_is_none():
    assert tag_of("") is None


def test_empty_parameter_name_is_a_400():
    with pytest.raises(CoreError) as err:
        parse_query("study", [("", "x")])
    assert err.value.status == 400


# ------------------------------------------------------------------------------ parse_query


def test_defaults():
    assert parse_query("study", []) == Query("study", matches=[], include=set(),
                                             include_all=False, fuzzy=False,
                                             limit=DEFAULT_LIMIT, offset=0, warnings=[])
    assert DEFAULT_LIMIT == 200


@pytest.mark.parametrize("params,limit,offset", [
    ([("limit", "10")], 10, 0),
    ([("offset", "30")], 200, 30),
    ([("limit", "0"), ("offset", "0")], 0, 0),
    ([("limit", "1000")], 1000, 0),
    ([("offset", "100000")], 200, 100000),
    ([("limit", "5"), ("limit", "7")], 7, 0),  # the last one counts
    ([("limit", "007")], 7, 0),
])
def test_limit_and_offset(params, limit, offset):
    query = parse_query("study", params)
    assert (query.limit, query.offset) == (limit, offset)
    assert query.matches == [] and query.include == set() and query.warnings == []


@pytest.mark.parametrize("params,message", [
    ([("limit", "1001")], "limit may be at most 1000"),
    ([("limit", "-1")], "limit must be a non-negative integer"),
    ([("limit", "")], "limit must be a non-negative integer"),
    ([("limit", "1.5")], "limit must be a non-negative integer"),
    ([("limit", " 5")], "limit must be a non-negative integer"),
    ([("offset", "-5")], "offset must be a non-negative integer"),
    ([("offset", "ten")], "offset must be a non-negative integer"),
    ([("fuzzymatching", "yes")], "fuzzymatching must be true or false"),
    ([("fuzzymatching", "")], "fuzzymatching must be true or false"),
    ([("fuzzymatching", "1")], "fuzzymatching must be true or false"),
    ([("includefield", "PatientName,Nonsense")], "includefield: unknown attribute 'Nonsense'"),
    ([("includefield", "Nonsense.PatientName")],
     "includefield: unknown attribute 'Nonsense.PatientName'"),
    ([("Nonsense", "1")],
     "unknown attribute 'Nonsense': use a keyword (PatientName) or a tag (00100010)"),
    ([("Foo.Bar", "x")],
     "unknown attribute 'Foo.Bar': use a keyword (PatientName) or a tag (00100010)"),
    ([("patientname", "x")],
     "unknown attribute 'patientname': use a keyword (PatientName) or a tag (00100010)"),
    ([("Limit", "5")],  # control parameters are lower case
     "unknown attribute 'Limit': use a keyword (PatientName) or a tag (00100010)"),
])
def test_bad_parameters_are_400(params, message):
    with pytest.raises(CoreError) as err:
        parse_query("study", params)
    assert err.value.status == 400
    assert err.value.code == "invalid"
    assert err.value.message == message


def test_superscript_limit_is_a_400():
    with pytest.raises(CoreError) as err:
        parse_query("study", [("limit", "²")])
    assert err.value.status == 400


@pytest.mark.parametrize("value,fuzzy", [("true", True), ("TRUE", True), ("True", True),
                                         ("false", False), ("False", False)])
def test_fuzzymatching(value, fuzzy):
    assert parse_query("study", [("fuzzymatching", value)]).fuzzy is fuzzy


@pytest.mark.parametrize("value,include,include_all", [
    ("PatientName", {"00100010"}, False),
    ("00100020", {"00100020"}, False),
    ("PatientName,00100020", {"00100010", "00100020"}, False),
    ("PatientName\\StudyDate", {"00100010", "00080020"}, False),
    (" PatientName , , StudyDate ,", {"00100010", "00080020"}, False),
    ("all", set(), True),
    ("all,IssuerOfPatientID", {"00100021"}, True),
    ("ReferencedStudySequence.ReferencedSOPInstanceUID", {"00081110"}, False),  # the sequence
    ("", set(), False),
    ("ALL", None, None),  # "all" is lower case only: ALL is no keyword
])
def test_includefield(value, include, include_all):
    if include is None:
        with pytest.raises(CoreError) as err:
            parse_query("study", [("includefield", value)])
        assert err.value.status == 400
        return
    query = parse_query("study", [("includefield", value)])
    assert query.include == include
    assert query.include_all is include_all
    assert query.matches == [] and query.warnings == []


def test_includefield_repeated_accumulates():
    query = parse_query("series", [("includefield", "PatientName"),
                                   ("includefield", "StudyDate")])
    assert query.include == {"00100010", "00080020"}


def test_control_parameters_are_not_attributes():
    query = parse_query("study", [("accept", "application/dicom+json"), ("charset", "utf-8")])
    assert query.matches == [] and query.include == set() and query.warnings == []


@pytest.mark.parametrize("level,params,matches", [
    ("study", [("PatientID", "P1")], [("00100020", "P1")]),
    ("study", [("00100020", "P1")], [("00100020", "P1")]),
    ("study", [("PatientName", "Smith*"), ("StudyDate", "20240101-")],
     [("00100010", "Smith*"), ("00080020", "20240101-")]),
    ("study", [("PatientName", "a"), ("PatientName", "b")],
     [("00100010", "a"), ("00100010", "b")]),
    ("study", [("StudyInstanceUID", "")], [("0020000D", "")]),  # universal matching
    ("series", [("Modality", "US"), ("PatientID", "P1")],
     [("00080060", "US"), ("00100020", "P1")]),
    ("instance", [("SOPClassUID", "1.2"), ("Modality", "US"), ("StudyDate", "20240101")],
     [("00080016", "1.2"), ("00080060", "US"), ("00080020", "20240101")]),
    ("instance", [("0020000e", "1.2.3")], [("0020000E", "1.2.3")]),
])
def test_matching_keys(level, params, matches):
    query = parse_query(level, params)
    assert query.matches == matches
    assert query.include == {tag for tag, _ in matches}
    assert query.warnings == []


@pytest.mark.parametrize("level,name,tag,warning", [
    # a series or instance key at a higher level
    ("study", "Modality", "00080060", "Modality is not supported for matching and was ignored"),
    ("study", "SOPInstanceUID", "00080018",
     "SOPInstanceUID is not supported for matching and was ignored"),
    ("series", "InstanceNumber", "00200013",
     "InstanceNumber is not supported for matching and was ignored"),
    # attributes not indexed at all
    ("instance", "InstitutionName", "00080080",
     "InstitutionName is not supported for matching and was ignored"),
    ("study", "00080080", "00080080",
     "InstitutionName is not supported for matching and was ignored"),
    ("study", "00091001", "00091001", "00091001 is not supported for matching and was ignored"),
    # sequence keys: the sequence is returned, nothing is matched
    ("study", "ReferencedStudySequence.ReferencedSOPInstanceUID", "00081110",
     "ReferencedStudySequence is not supported for matching and was ignored"),
    ("study", "PatientID.IssuerOfPatientID", "00100020",
     "PatientID.IssuerOfPatientID: sequence matching is not supported"),
])
def test_keys_not_matched_are_warnings(level, name, tag, warning):
    query = parse_query(level, [(name, "value")])
    assert query.matches == []
    assert query.include == {tag}
    assert query.warnings == [warning]


def test_warnings_and_matches_together_keep_their_order():
    query = parse_query("study", [("InstitutionName", "x"), ("PatientID", "1"),
                                  ("Modality", "US"), ("limit", "3")])
    assert query.matches == [("00100020", "1")]
    assert query.warnings == ["InstitutionName is not supported for matching and was ignored",
                              "Modality is not supported for matching and was ignored"]
    assert query.limit == 3


# ------------------------------------------------------------------------------ run (SQLite)

STUDIES = [
    # uid, patient id, alphabetic name, ideographic name, date, time, modalities
    ("1.2.1", "P1", "Smith^John", None, "20240105", "093000", "|US|"),
    ("1.2.2", "P2", "Wang^Wei", "王^伟", "20240120", "141500", "|US|SR|"),
    ("1.2.3", "Q3", "Smithers^Ann", None, "20240201", "080000", "|SR|"),
]


@pytest.fixture
def engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    target = tmp_path / "query.db"
    shutil.copy(sqlite_template, target)
    engine = make_engine(f"sqlite:///{target}")
    with engine.begin() as conn:
        for uid, pid, alpha, ideo, date, time, modalities in STUDIES:
            name = "=".join(n for n in (alpha, ideo) if n)
            conn.execute(insert(dicom_studies).values(
                study_uid=uid, patient_id=pid, patient_name=name,
                patient_name_alphabetic=alpha, patient_name_ideographic=ideo,
                study_date=date, study_time=time, modalities=modalities,
                num_series=1, num_instances=1, updated=0, attrs=b"{}"))
    yield engine
    engine.dispose()


def found(engine: Engine, params: list[tuple[str, str]], **kwargs: object) -> list[str]:
    with engine.connect() as conn:
        return [row.study_uid for row in run(conn, parse_query("study", params), **kwargs)]


@pytest.mark.parametrize("params,uids", [
    ([], ["1.2.1", "1.2.2", "1.2.3"]),
    ([("PatientID", "P1")], ["1.2.1"]),
    ([("PatientID", "P*")], ["1.2.1", "1.2.2"]),
    ([("PatientID", "?3")], ["1.2.3"]),
    ([("PatientID", "p1")], []),  # text matching is case-sensitive
    ([("PatientID", "P1,Q3")], ["1.2.1", "1.2.3"]),
    ([("PatientID", "")], ["1.2.1", "1.2.2", "1.2.3"]),
    ([("StudyInstanceUID", "1.2.1\\1.2.3")], ["1.2.1", "1.2.3"]),
    ([("StudyInstanceUID", "1.2.2, 9.9")], ["1.2.2"]),
    ([("StudyDate", "20240120")], ["1.2.2"]),
    ([("StudyDate", "20240101-20240131")], ["1.2.1", "1.2.2"]),
    ([("StudyDate", "20240120-")], ["1.2.2", "1.2.3"]),
    ([("StudyDate", "-20240105")], ["1.2.1"]),
    ([("StudyTime", "14")], ["1.2.2"]),
    ([("StudyTime", "0800-0930")], ["1.2.1", "1.2.3"]),
    ([("ModalitiesInStudy", "SR")], ["1.2.2", "1.2.3"]),
    ([("ModalitiesInStudy", "us")], ["1.2.1", "1.2.2"]),
    ([("ModalitiesInStudy", "US\\SR")], ["1.2.1", "1.2.2", "1.2.3"]),
    ([("PatientName", "smith*")], ["1.2.1", "1.2.3"]),  # names: case-insensitive
    ([("PatientName", "Smith^John")], ["1.2.1"]),
    ([("PatientName", "王*")], ["1.2.2"]),  # by the ideographic group
    ([("PatientName", "*")], ["1.2.1", "1.2.2", "1.2.3"]),
    ([("PatientName", "Smith*"), ("StudyDate", "20240201")], ["1.2.3"]),
    ([("InstitutionName", "nowhere")], ["1.2.1", "1.2.2", "1.2.3"]),  # ignored, warned
    ([("limit", "2")], ["1.2.1", "1.2.2"]),
    ([("limit", "2"), ("offset", "2")], ["1.2.3"]),
    ([("offset", "3")], []),
])
def test_run_study_level(engine, params, uids):
    assert found(engine, params) == uids


def test_run_allowed_and_after(engine):
    assert found(engine, [], allowed={"1.2.3", "1.2.1", "9.9"}) == ["1.2.1", "1.2.3"]
    assert found(engine, [], allowed=set()) == []
    assert found(engine, [], study_uid="1.2.2") == ["1.2.2"]
    with engine.connect() as conn:
        first = run(conn, parse_query("study", [("limit", "1")]))[0]
    assert found(engine, [], after=first.id) == ["1.2.2", "1.2.3"]


@pytest.mark.parametrize("params,message", [
    ([("StudyDate", "2024-01-01")], "StudyDate: malformed value '2024-01-01' (expected YYYYMMDD "
                                    "or a range a-b)"),
    ([("StudyDate", "202401")], "StudyDate: dates are YYYYMMDD, got '202401'"),
    ([("StudyTime", "ab")], "StudyTime: malformed value 'ab' (expected HHMMSS or a range a-b)"),
])
def test_run_malformed_values_are_400(engine, params, message):
    with pytest.raises(CoreError) as err:
        found(engine, params)
    assert err.value.status == 400
    assert err.value.message == message


# ------------------------------------------------------------------------------ results


def series_row() -> SimpleNamespace:
    study = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]},
             "00100020": {"vr": "LO", "Value": ["P1"]}}
    series = {"00080060": {"vr": "CS", "Value": ["US"]},
              "0008103E": {"vr": "LO", "Value": ["abdomen"]}}
    return SimpleNamespace(study_attrs=orjson.dumps(study), attrs=orjson.dumps(series),
                           study_uid="1.2", series_uid="1.2.3", num_instances=4)


def test_series_result_with_an_included_study_attribute():
    data = series_result(series_row(), parse_query("series", [("includefield", "PatientID")]))
    assert data["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert "00100010" not in data  # not asked for, not a series default
    assert data["00201209"] == {"vr": "IS", "Value": [4]}
    assert list(data) == sorted(data)


def test_series_result_includefield_all_has_the_study_attributes():
    data = series_result(series_row(), parse_query("series", [("includefield", "all")]))
    assert data["00100020"] == {"vr": "LO", "Value": ["P1"]}
    assert data["0008103E"] == {"vr": "LO", "Value": ["abdomen"]}
