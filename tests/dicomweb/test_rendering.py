"""``sonobridge.dicomweb.rendering``: what a ``/rendered`` or ``/thumbnail`` request asks for.

``choose`` (the media type for a single frame or a multiframe rendering, from Accept or the
``accept`` query parameter, 406 when none is made here), ``parse_viewport``, ``parse_window``
and ``parse_quality``: good values, defaults, and bad values as 400 ``DicomwebError``s.
"""

from __future__ import annotations

import pytest

from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.rendering import choose, parse_quality, parse_viewport, parse_window

# ------------------------------------------------------------------------------ choose


@pytest.mark.parametrize("accept,multiframe,expected", [
    (None, False, "image/jpeg"),
    ("", False, "image/jpeg"),
    (None, True, "image/jpeg"),  # a multiframe without Accept: its first frame as JPEG
    ("image/png", False, "image/png"),
    ("image/gif", False, "image/gif"),
    ("image/png", True, "image/png"),
    ("video/mp4", True, "video/mp4"),
    ("image/gif", True, "image/gif"),
    ("*/*", False, "image/jpeg"),
    ("*/*", True, "video/mp4"),  # any type: the cine first
    ("image/*", True, "image/gif"),
    ("image/*", False, "image/jpeg"),
    ("video/*", True, "video/mp4"),
    ("image/webp, image/png;q=0.8, */*;q=0.1", False, "image/png"),
    ("image/jpeg;q=0.5, image/png", False, "image/png"),
    ("image/gif;q=0.4, image/jpeg;q=0.6", True, "image/jpeg"),
    ("video/mp4;q=0, image/gif", True, "image/gif"),
    ("IMAGE/PNG", False, "image/png"),
    ("image/jpeg;q=0", False, "image/jpeg"),  # all refused: as no Accept
])
def test_choose(accept, multiframe, expected):
    assert choose(accept, multiframe=multiframe) == expected


@pytest.mark.parametrize("accept,query,multiframe,expected", [
    ("image/png", "image/gif", False, "image/gif"),  # the query parameter wins
    ("video/mp4", "image/jpeg", True, "image/jpeg"),
    ("image/png", "", False, "image/png"),  # an empty query parameter: the header
    ("image/png", None, False, "image/png"),
    (None, "image/png", False, "image/png"),
])
def test_choose_query_accept_overrides_header(accept, query, multiframe, expected):
    assert choose(accept, multiframe=multiframe, query_accept=query) == expected


@pytest.mark.parametrize("accept,query,multiframe", [
    ("video/mp4", None, False),  # a cine only for a multiframe rendering
    ("image/jp2", None, False),
    ("application/dicom", None, True),
    ("image/webp, text/html", None, False),
    ("image/png", "image/webp", False),  # the query parameter replaces a usable header
    ("video/*", None, False),
])
def test_choose_not_acceptable(accept, query, multiframe):
    with pytest.raises(DicomwebError) as err:
        choose(accept, multiframe=multiframe, query_accept=query)
    assert err.value.status == 406
    offers = "video/mp4, image/gif, image/jpeg, image/png" if multiframe else \
        "image/jpeg, image/png, image/gif"
    assert err.value.message == (f"cannot render as any of {query or accept!r}; this server "
                                 f"renders {offers}")


# ------------------------------------------------------------------------------ viewport


@pytest.mark.parametrize("value,expected", [
    (None, None),
    ("", None),
    ("512", (512, 512)),
    ("512,", (512, 512)),
    ("512,0", (512, 512)),  # no height: square
    ("512,256", (512, 256)),
    (" 64 , 32 ", (64, 32)),
    ("1,1", (1, 1)),
    ("8192,8192", (8192, 8192)),
    ("100,50,0,0,10,10", (100, 50)),  # the source rectangle (sx,sy,sw,sh) is ignored
])
def test_parse_viewport(value, expected):
    assert parse_viewport(value) == expected


@pytest.mark.parametrize("value,message", [
    ("abc", "viewport is vw,vh (pixels)"),
    ("1.5", "viewport is vw,vh (pixels)"),
    ("64,x", "viewport is vw,vh (pixels)"),
    (",64", "viewport is vw,vh (pixels)"),
    ("0", "viewport must be between 1 and 8192 pixels"),
    ("-5", "viewport must be between 1 and 8192 pixels"),
    ("8193", "viewport must be between 1 and 8192 pixels"),
    ("10,8193", "viewport must be between 1 and 8192 pixels"),
    ("10,-1", "viewport must be between 1 and 8192 pixels"),
])
def test_parse_viewport_bad(value, message):
    with pytest.raises(DicomwebError) as err:
        parse_viewport(value)
    assert err.value.status == 400
    assert err.value.message == message


# ------------------------------------------------------------------------------ window


@pytest.mark.parametrize("value,expected", [
    (None, None),
    ("", None),
    ("40,400", (40.0, 400.0, "LINEAR")),  # linear unless told
    ("-600,1600", (-600.0, 1600.0, "LINEAR")),
    ("127.5,255.5", (127.5, 255.5, "LINEAR")),
    (" 40 , 400 ", (40.0, 400.0, "LINEAR")),
    ("40,400,linear", (40.0, 400.0, "LINEAR")),
    ("40,400,linear-exact", (40.0, 400.0, "LINEAR_EXACT")),
    ("40,400,sigmoid", (40.0, 400.0, "SIGMOID")),
    ("40,400, Sigmoid ", (40.0, 400.0, "SIGMOID")),
    ("40,0.001", (40.0, 0.001, "LINEAR")),
])
def test_parse_window(value, expected):
    assert parse_window(value) == expected


@pytest.mark.parametrize("value,message", [
    ("40", "window is center,width[,function]"),
    ("a,b", "window is center,width[,function]"),
    ("40,", "window is center,width[,function]"),
    (",400", "window is center,width[,function]"),
    ("40,0", "window width must be positive"),
    ("40,-1", "window width must be positive"),
    ("40,400,cubic", "the window function is linear, linear-exact or sigmoid"),
    ("40,400,linear_exact", "the window function is linear, linear-exact or sigmoid"),
    ("40,400,", "the window function is linear, linear-exact or sigmoid"),
    ("40,400,linear,1", "the window function is linear, linear-exact or sigmoid"),
])
def test_parse_window_bad(value, message):
    with pytest.raises(DicomwebError) as err:
        parse_window(value)
    assert err.value.status == 400
    assert err.value.message == message


@pytest.mark.parametrize("value", ["40,nan", "nan,400", "40,inf"])
def test_parse_window_refuses_non_finite_numbers(value):
    with pytest.raises(DicomwebError) as err:
        parse_window(value)
    assert err.value.status == 400


# ------------------------------------------------------------------------------ quality


@pytest.mark.parametrize("value,expected", [
    (None, 90), ("", 90), ("1", 1), ("50", 50), ("100", 100), ("075", 75)])
def test_parse_quality(value, expected):
    assert parse_quality(value) == expected


@pytest.mark.parametrize("value", ["0", "101", "-5", "50.5", "high", " 50", "1e2"])
def test_parse_quality_bad(value):
    with pytest.raises(DicomwebError) as err:
        parse_quality(value)
    assert err.value.status == 400
    assert err.value.message == "quality is an integer from 1 to 100"


def test_parse_quality_superscript_digit_is_a_400():
    with pytest.raises(DicomwebError) as err:
        parse_quality("²")
    assert err.value.status == 400
