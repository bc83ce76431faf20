"""``sonobridge.core.scopes``: SMART scopes parsed, and one scope set checked against another.

``parse_scope`` (v2 permissions, v1 ``read``/``write``/``*``, query-restricted scopes, the
non-resource scopes, and what is not a SMART scope), ``ResourceScope.covers`` and ``text``,
``resource_scopes``, and ``is_within`` (narrowing on refresh, a client's registered scopes).
"""

from __future__ import annotations

import pytest

from sonobridge.core.scopes import (
    ResourceScope,
    ScopeError,
    is_within,
    parse_scope,
    resource_scopes,
    split,
)


@pytest.mark.parametrize("token,context,res_type,perms,query", [
    ("patient/Observation.rs", "patient", "Observation", "rs", ()),
    ("user/Patient.cruds", "user", "Patient", "cruds", ()),
    ("system/*.c", "system", "*", "c", ()),
    ("user/Task.u", "user", "Task", "u", ()),
    ("user/Task.crus", "user", "Task", "crus", ()),
    ("patient/Observation.rs?category=laboratory", "patient", "Observation", "rs",
     (("category", "laboratory"),)),
    ("user/Observation.rs?category=laboratory&code=http://loinc.org|1234-5", "user",
     "Observation", "rs", (("category", "laboratory"), ("code", "http://loinc.org|1234-5"))),
    ("user/Observation.s?a=b%20c&x=", "user", "Observation", "s", (("a", "b c"), ("x", ""))),
    ("user/Observation.rs?flag", "user", "Observation", "rs", (("flag", ""),)),
    # v1 scopes
    ("patient/Observation.read", "patient", "Observation", "rs", ()),
    ("user/*.write", "user", "*", "cud", ()),
    ("system/Patient.*", "system", "Patient", "cruds", ()),
    ("patient/*.read?category=vital-signs", "patient", "*", "rs",
     (("category", "vital-signs"),)),
])
def test_parse_resource_scopes(token, context, res_type, perms, query):
    assert parse_scope(token) == ResourceScope(context, res_type, frozenset(perms), query)


@pytest.mark.parametrize("token", ["openid", "fhirUser", "profile", "launch", "launch/patient",
                                   "launch/encounter", "launch/anything", "offline_access",
                                   "online_access"])
def test_non_resource_scopes_are_none(token):
    assert parse_scope(token) is None


@pytest.mark.parametrize("token", [
    "patient/Observation.sr",  # v2 letters in c r u d s order only
    "patient/Observation.rr",
    "patient/Observation.",
    "patient/Observation",
    "patient/Observation.x",
    "patient/Observation.readx",
    "patient/Observation.Read",
    "patient/observation.rs",  # a type starts with a capital
    "patient/A.rs",
    "Patient/Observation.rs",
    "group/Observation.rs",
    "/Observation.rs",
    "patient/Observation.rs?",  # a query needs something after the ?
    "patient/Observation.rs ",
    "email",
    "",
])
def test_not_a_smart_scope(token):
    with pytest.raises(ScopeError) as err:
        parse_scope(token)
    assert str(err.value) == f"not a SMART scope: {token!r}"


@pytest.mark.parametrize("scope,res_type,permission,expected", [
    ("patient/Observation.rs", "Observation", "r", True),
    ("patient/Observation.rs", "Observation", "s", True),
    ("patient/Observation.rs", "Observation", "c", False),
    ("patient/Observation.rs", "Patient", "r", False),
    ("user/*.cud", "Patient", "d", True),
    ("user/*.cud", "Patient", "r", False),
    ("system/*.read", "Anything", "s", True),
])
def test_covers(scope, res_type, permission, expected):
    parsed = parse_scope(scope)
    assert parsed is not None
    assert parsed.covers(res_type, permission) is expected


@pytest.mark.parametrize("token,text", [
    ("patient/Observation.rs", "patient/Observation.rs"),
    ("patient/Observation.read", "patient/Observation.rs"),
    ("user/*.write", "user/*.cud"),
    ("system/Patient.*", "system/Patient.cruds"),
    ("user/Observation.rs?category=laboratory&code=x",
     "user/Observation.rs?category=laboratory&code=x"),
])
def test_text_is_the_v2_form(token, text):
    parsed = parse_scope(token)
    assert parsed is not None
    assert parsed.text() == text


def test_split_and_resource_scopes():
    scope = "  openid  fhirUser patient/Observation.rs launch/patient user/*.read "
    assert split(scope) == ["openid", "fhirUser", "patient/Observation.rs", "launch/patient",
                            "user/*.read"]
    assert split(None) == [] and split("") == []
    assert resource_scopes(scope) == [
        ResourceScope("patient", "Observation", frozenset("rs")),
        ResourceScope("user", "*", frozenset("rs")),
    ]
    with pytest.raises(ScopeError):
        resource_scopes("openid bogus")


@pytest.mark.parametrize("requested,granted,expected", [
    ("", "patient/*.rs", True),
    ("openid fhirUser", "openid fhirUser launch/patient", True),
    ("openid", "patient/*.cruds", False),  # a non-resource scope must be granted by name
    ("launch/patient", "openid", False),
    ("patient/Observation.rs", "patient/Observation.rs", True),
    ("patient/Observation.rs", "patient/*.cruds", True),
    ("patient/Observation.r", "patient/Observation.rs", True),
    ("patient/Observation.rs", "patient/Observation.r", False),
    ("patient/Observation.cruds", "patient/Observation.rs patient/Observation.cud", False),
    ("patient/*.rs", "patient/Observation.rs", False),
    ("user/Observation.rs", "patient/Observation.rs", False),  # another context
    ("patient/Observation.rs", "user/Observation.rs", False),
    ("system/Observation.rs", "user/*.cruds", False),
    # v1 and v2 spellings of the same rights
    ("patient/Observation.read", "patient/Observation.rs", True),
    ("patient/Observation.rs", "patient/Observation.read", True),
    ("user/Patient.write", "user/Patient.cud", True),
    ("user/Patient.*", "user/Patient.write", False),
    # query restrictions: a restricted request within an open grant, not the reverse
    ("patient/Observation.rs?category=laboratory", "patient/Observation.rs", True),
    ("patient/Observation.rs?category=laboratory", "patient/*.rs", True),
    ("patient/Observation.rs", "patient/Observation.rs?category=laboratory", False),
    ("patient/Observation.rs?category=laboratory",
     "patient/Observation.rs?category=laboratory", True),
    ("patient/Observation.r?category=laboratory",
     "patient/Observation.rs?category=laboratory", True),
    ("patient/Observation.rs?category=vital-signs",
     "patient/Observation.rs?category=laboratory", False),
    # the parameters are compared in order, so a reordered restriction is refused
    ("patient/Observation.rs?a=1&b=2", "patient/Observation.rs?b=2&a=1", False),
    ("openid patient/Observation.rs", "openid patient/*.rs", True),
    ("openid patient/Observation.rs user/Patient.r", "openid patient/*.rs", False),
])
def test_is_within(requested, granted, expected):
    assert is_within(requested, granted) is expected


@pytest.mark.parametrize("requested,granted", [
    ("garbage", "openid"),  # an unknown requested scope
    ("openid", "openid garbage"),  # an unknown granted scope
    ("garbage", "garbage"),  # even when granted by name: the grant is parsed first
])
def test_is_within_unknown_scopes_raise(requested, granted):
    with pytest.raises(ScopeError):
        is_within(requested, granted)
