"""``sonobridge.dicomweb.accept``: Accept headers parsed into media ranges.

Covers media ranges and their parameters (``type``, ``transfer-syntax``, quoted or not, case),
q-values (order, ties, zero, malformed), quoted commas and semicolons, ``*/*`` and ``image/*``
matching, ``content_type`` and what malformed input turns into.
"""

from __future__ import annotations

import pytest

from sonobridge.dicomweb.accept import MediaRange, content_type, parse_accept

DICOM_TS = "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("text", [None, "", "   ", ",", " , ,, "])
def test_empty_accepts_anything(text):
    assert parse_accept(text) == []
    assert content_type(text) is None


def test_single_media_type():
    assert parse_accept("application/dicom") == [MediaRange("application/dicom", {}, 1.0)]


@pytest.mark.parametrize("text,params", [
    ('multipart/related; type="application/dicom"',
     {"type": "application/dicom"}),
    ("multipart/related; type=application/dicom",
     {"type": "application/dicom"}),
    ('multipart/related;type="application/dicom";transfer-syntax=*',
     {"type": "application/dicom", "transfer-syntax": "*"}),
    (f'multipart/related; type="application/dicom"; transfer-syntax="{DICOM_TS}"',
     {"type": "application/dicom", "transfer-syntax": DICOM_TS}),
    (f"multipart/related ; type = application/dicom ; transfer-syntax = {DICOM_TS} ",
     {"type": "application/dicom", "transfer-syntax": DICOM_TS}),
    # parameter names and the type are case-insensitive; other values are kept as given
    ("Multipart/Related; TYPE=Application/DICOM; Transfer-Syntax=AbC",
     {"type": "application/dicom", "transfer-syntax": "AbC"}),
    ('multipart/related; type=" image/jpeg "', {"type": "image/jpeg"}),
])
def test_parameters(text, params):
    (only,) = parse_accept(text)
    assert only.media == "multipart/related"
    assert only.params == params
    assert only.quality == 1.0


def test_part_type_and_transfer_syntax_properties():
    (only,) = parse_accept(f'multipart/related; type="image/jpeg"; transfer-syntax={DICOM_TS}')
    assert only.part_type == "image/jpeg"
    assert only.transfer_syntax == DICOM_TS
    (bare,) = parse_accept("application/dicom")
    assert bare.part_type is None
    assert bare.transfer_syntax is None


@pytest.mark.parametrize("text,order", [
    ("a/x;q=0.5, b/x", ["b/x", "a/x"]),
    ("a/x, b/x;q=0.9, c/x;q=0.95", ["a/x", "c/x", "b/x"]),
    # equal q-values keep the order given
    ("a/x;q=0.5, b/x;q=0.5, c/x;q=0.5", ["a/x", "b/x", "c/x"]),
    ("a/x, b/x, c/x", ["a/x", "b/x", "c/x"]),
    ("*/*;q=0.1, image/jpeg", ["image/jpeg", "*/*"]),
    # q is not clamped to 1: a larger value sorts first
    ("a/x, b/x;q=2", ["b/x", "a/x"]),
])
def test_order_by_quality_then_as_given(text, order):
    assert [r.media for r in parse_accept(text)] == order


@pytest.mark.parametrize("text,kept", [
    ("a/x;q=0, b/x", ["b/x"]),
    ("a/x;q=0.0", []),
    ("a/x;q=-1, b/x;q=0.001", ["b/x"]),
    ("a/x;q=high, b/x", ["b/x"]),  # a malformed q-value counts as 0
    ("a/x;q=, b/x", ["b/x"]),
    ("a/x;q=nan, b/x", ["b/x"]),
])
def test_zero_negative_and_malformed_q_are_dropped(text, kept):
    assert [r.media for r in parse_accept(text)] == kept


def test_quality_value_and_q_not_a_parameter():
    (only,) = parse_accept('multipart/related; type="application/dicom"; q=0.25')
    assert only.quality == 0.25
    assert "q" not in only.params
    assert only.params == {"type": "application/dicom"}


def test_quoted_commas_and_semicolons_stay_in_the_value():
    ranges = parse_accept('a/x; note="one, two; three", b/y')
    assert ranges == [MediaRange("a/x", {"note": "one, two; three"}, 1.0),
                      MediaRange("b/y", {}, 1.0)]


def test_many_alternatives_as_a_viewer_sends_them():
    text = ('multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80; q=1, '
            'multipart/related; type="application/octet-stream"; transfer-syntax=*; q=0.9, '
            '*/*; q=0.1')
    assert parse_accept(text) == [
        MediaRange("multipart/related",
                   {"type": "image/jls", "transfer-syntax": "1.2.840.10008.1.2.4.80"}, 1.0),
        MediaRange("multipart/related",
                   {"type": "application/octet-stream", "transfer-syntax": "*"}, 0.9),
        MediaRange("*/*", {}, 0.1),
    ]


@pytest.mark.parametrize("text,expected", [
    ("a/x;;", MediaRange("a/x", {"": ""}, 1.0)),  # empty parameters are kept, harmlessly
    ("a/x; flag", MediaRange("a/x", {"flag": ""}, 1.0)),
    ("a/x; k=v=w", MediaRange("a/x", {"k": "v=w"}, 1.0)),
    ("; type=image/png", MediaRange("", {"type": "image/png"}, 1.0)),
    ('a/x; k="unterminated, b/y', MediaRange("a/x", {"k": "unterminated, b/y"}, 1.0)),
])
def test_malformed_input_does_not_raise(text, expected):
    assert parse_accept(text) == [expected]


def test_content_type_is_the_best_range():
    assert content_type("text/plain;q=0.2, application/dicom+json") == \
        MediaRange("application/dicom+json", {}, 1.0)
    assert content_type("a/x;q=0") is None


@pytest.mark.parametrize("range_media,media,expected", [
    ("*/*", "image/jpeg", True),
    ("*/*", "application/dicom", True),
    ("image/*", "image/jpeg", True),
    ("image/*", "image/png", True),
    ("image/*", "video/mp4", False),
    ("image/jpeg", "image/jpeg", True),
    ("image/jpeg", "image/png", False),
    ("application/dicom", "application/dicom+json", False),
    ("video/*", "image/gif", False),
    ("image", "image/jpeg", False),
])
def test_matches(range_media, media, expected):
    assert MediaRange(range_media).matches(media) is expected
