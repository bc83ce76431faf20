"""``sonobridge.core.access``: the decisions that need no database.

``require`` (a ``Forbidden`` becomes a 403 ``CoreError`` with ``WWW-Authenticate``),
``may_use`` (DIMSE services), and the static ``Access.search_types``, ``Access.search_terms``
(compartment and extra parameters a policy adds to a search), ``Access.every_study`` and
``Access.may_reindex``; and ``Access.studies`` for storing, which does not touch the index.
Rows are (scopes, role, patient, …, expected).
"""

from __future__ import annotations

import pytest

from sonobridge.core.access import Access, forbidden, may_use, require
from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.search.engine import Compartment
from sonobridge.core.validation import known_types

CHALLENGE = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


def policy(scope: str, role: str | None = None, patient: str | None = None) -> Policy:
    return Policy(subject="u1", client_id="app", scopes=tuple(resource_scopes(scope)),
                  patient=patient, role=role)


def test_forbidden_error():
    err = forbidden("no")
    assert (err.status, err.code, err.message, err.headers) == (403, "forbidden", "no",
                                                                 CHALLENGE)


# ------------------------------------------------------------------------------ require


@pytest.mark.parametrize("scope,role,patient,res_type,permission,expected", [
    ("patient/Observation.rs", None, "p1", "Observation", "r", ["patient/Observation.rs"]),
    ("patient/Observation.rs user/*.rs", "trainee", "p1", "Observation", "s",
     ["patient/Observation.rs", "user/*.rs"]),
    ("user/*.cruds", "trainee", None, "Task", "u", ["user/*.cruds"]),
    ("system/*.rs", None, None, "Patient", "r", ["system/*.rs"]),
    ("patient/Observation.rs", None, None, "Observation", "r", None),
    ("user/*.cruds", "trainee", None, "Task", "c", None),
    ("user/*.cruds", "remote-expert", None, "AuditEvent", "r", None),
    ("system/Patient.rs", None, None, "Patient", "d", None),
])
def test_require(scope, role, patient, res_type, permission, expected):
    p = policy(scope, role, patient)
    if expected is not None:
        assert [s.text() for s in require(p, res_type, permission)] == expected
        return
    with pytest.raises(CoreError) as err:
        require(p, res_type, permission)
    assert err.value.status == 403
    assert err.value.code == "forbidden"
    assert err.value.headers == CHALLENGE
    assert err.value.message.startswith("the token's scopes do not allow ")
    assert err.value.message.endswith(f" on {res_type}")


def test_require_unrestricted():
    assert require(Policy.open(), "AuditEvent", "d") == []


# ------------------------------------------------------------------------------ may_use


@pytest.mark.parametrize("services,service,expected", [
    ({"echo", "store"}, "echo", True),
    ({"echo", "store"}, "store", True),
    ({"echo", "store"}, "find", False),
    ({"find", "move"}, "get", False),
    (set(), "echo", False),
    ({"echo", "store", "find", "move", "get", "worklist", "mpps", "commit"}, "commit", True),
])
def test_may_use(services, service, expected):
    assert may_use(Policy.system("dicom:X", "X", frozenset(services)), service) is expected


def test_may_use_needs_services_even_unrestricted():
    assert may_use(Policy.open(), "echo") is False  # HTTP callers have no DIMSE services


# ------------------------------------------------------------------------------ search_types


@pytest.mark.parametrize("scope,role,patient,types,expected", [
    ("patient/Observation.rs", None, "p1", ["Observation"], ["Observation"]),
    ("patient/*.rs", None, "p1", ["Observation", "Patient"], ["Observation", "Patient"]),
    ("user/*.rs", "audit-admin", None, [], ["AuditEvent", "Provenance"]),
    ("patient/Observation.rs patient/Patient.read", None, "p1", [], ["Observation", "Patient"]),
    ("system/ImagingStudy.s user/Media.rs", "sonographer", None, [],
     ["ImagingStudy", "Media"]),
    ("user/Observation.r", "remote-expert", None, ["Observation"], None),  # read, not search
    ("patient/*.rs", None, "p1", ["Observation", "AuditEvent"], None),
    ("patient/Observation.rs", None, None, [], None),  # no patient: no search at all
    ("user/*.rs", None, None, [], None),
])
def test_search_types(scope, role, patient, types, expected):
    p = policy(scope, role, patient)
    if expected is not None:
        assert Access.search_types(p, types) == expected
        return
    with pytest.raises(CoreError) as err:
        Access.search_types(p, types)
    assert err.value.status == 403
    assert err.value.headers == CHALLENGE
    if not types:
        assert err.value.message == "the token's scopes allow no search"


def test_search_types_across_all_types_leaves_out_the_audit_trail():
    everything = Access.search_types(policy("user/*.rs", "remote-expert"), [])
    assert everything == sorted(known_types() - {"AuditEvent"})
    assert Access.search_types(policy("system/*.s"), []) == everything


@pytest.mark.parametrize("types", [[], ["Observation"], ["AuditEvent", "Patient"]])
def test_search_types_unrestricted_is_as_asked(types):
    assert Access.search_types(Policy.open(), types) == types


# ------------------------------------------------------------------------------ search_terms

P1 = Compartment("Patient", "p1")


@pytest.mark.parametrize("scope,role,patient,types,given,expected", [
    # unrestricted scopes add nothing
    ("user/*.rs", "remote-expert", None, ["Observation"], None, (None, [])),
    ("system/*.rs", None, None, [], None, (None, [])),
    # patient scopes confine to the patient in context
    ("patient/*.rs", None, "p1", ["Observation"], None, (P1, [])),
    ("patient/*.rs", None, "p1", [], None, (P1, [])),
    ("patient/*.rs", None, "p1", ["Observation"], P1, (P1, [])),
    # a broader scope beside the patient one: not confined
    ("patient/Observation.rs user/Observation.rs", "remote-expert", "p1", ["Observation"], None,
     (None, [])),
    # confined for one type, open for another: the whole search is confined (narrower)
    ("patient/Observation.rs system/Patient.rs", None, "p1", ["Observation", "Patient"], None,
     (P1, [])),
    # a compartment asked for by an unconfined caller is kept
    ("user/*.rs", "remote-expert", None, ["Observation"], Compartment("Patient", "p2"),
     (Compartment("Patient", "p2"), [])),
    # query-restricted scopes on one type
    ("user/Observation.rs?category=laboratory", "qc-officer", None, ["Observation"], None,
     (None, [("category", "laboratory")])),
    ("patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs",
     None, "p1", ["Observation"], None, (P1, [("category", "laboratory,vital-signs")])),
    ("patient/Observation.rs?category=a&status=final patient/Observation.rs?category=b",
     None, "p1", ["Observation"], None, (P1, [("category", "a"), ("status", "final")])),
    ("user/Observation.rs?category=a user/Observation.rs?code=x", "remote-expert", None,
     ["Observation"], None, (None, [("category", "a")])),
    # a restricted and an open scope: open
    ("patient/Observation.rs?category=a patient/Observation.rs", None, "p1", ["Observation"],
     None, (P1, [])),
    ("user/Observation.rs?category=a user/Observation.rs", "remote-expert", None,
     ["Observation"], None, (None, [])),
    # a restricted scope that cannot apply (no patient in context) is no restriction
    ("patient/Observation.rs?category=a system/Observation.rs", None, None, ["Observation"],
     None, (None, [])),
])
def test_search_terms(scope, role, patient, types, given, expected):
    assert Access.search_terms(policy(scope, role, patient), types, given) == expected


def test_search_terms_another_patients_compartment_is_403():
    with pytest.raises(CoreError) as err:
        Access.search_terms(policy("patient/*.rs", None, "p1"), ["Observation"],
                            Compartment("Patient", "p2"))
    assert err.value.status == 403
    assert err.value.message == "this token is confined to another patient's compartment"
    assert err.value.headers == CHALLENGE


def test_search_terms_unrestricted_keeps_the_compartment():
    given = Compartment("Patient", "p7")
    assert Access.search_terms(Policy.open(), ["Observation"], given) == (given, [])
    assert Access.search_terms(Policy.open(), [], None) == (None, [])


def _widens(terms: tuple[Compartment | None, list[tuple[str, str]]]) -> bool:
    compartment, extra = terms
    return compartment is None or ("category", "laboratory") not in extra


@pytest.mark.xfail(reason="search_terms adds a scope's query only when one type is searched: "
                          "a search of several types (_type=, Patient/x/*, $everything) drops "
                          "the category restriction, wider than the grant", strict=True)
def test_search_terms_keeps_a_restriction_when_several_types_are_searched():
    p = policy("patient/Observation.rs?category=laboratory patient/Patient.rs", None, "p1")
    types = Access.search_types(p, [])
    assert types == ["Observation", "Patient"]
    try:
        terms = Access.search_terms(p, types, None)
    except CoreError as err:  # refusing is as correct as narrowing
        assert err.status == 403
    else:
        assert not _widens(terms), terms


@pytest.mark.xfail(reason="with a patient/ and a user/ restricted scope, search_terms keeps the "
                          "patient scope's filter but drops its compartment: category=a "
                          "Observations of every patient, which neither scope grants",
                   strict=True)
def test_search_terms_never_wider_than_the_grant():
    p = policy("patient/Observation.rs?category=laboratory user/Observation.rs?code=x",
               "remote-expert", "p1")
    compartment, extra = Access.search_terms(p, ["Observation"], None)
    # either the patient scope's filter within its compartment, or the user scope's filter
    assert (compartment, extra) in [(P1, [("category", "laboratory")]),
                                    (None, [("code", "x")])]


# ------------------------------------------------------------------------------ studies


@pytest.mark.parametrize("scope,role,patient,expected", [
    ("user/ImagingStudy.rs", "remote-expert", None, True),
    ("system/*.rs", None, None, True),
    ("user/*.read", "sonographer", None, True),
    ("patient/ImagingStudy.rs", None, "p1", False),
    ("user/ImagingStudy.rs?modality=US", "remote-expert", None, False),
    ("user/ImagingStudy.r", "remote-expert", None, False),  # read without search
    ("user/ImagingStudy.s system/ImagingStudy.r", "remote-expert", None, True),
    ("patient/ImagingStudy.rs user/ImagingStudy.rs", "remote-expert", "p1", True),
    ("user/*.rs", "system-admin", None, False),  # the role reads no clinical data
    ("user/*.rs", None, None, False),
    ("", None, None, False),
])
def test_every_study(scope, role, patient, expected):
    assert Access.every_study(policy(scope, role, patient)) is expected


def test_every_study_unrestricted():
    assert Access.every_study(Policy.open()) is True


@pytest.mark.parametrize("p,expected", [
    (Policy.open(), True),
    (Policy.system("sonobridge"), True),
    (policy("user/*.cruds", "system-admin"), True),
    (policy("user/*.cruds", "remote-expert"), False),
    (policy("system/*.cruds"), False),
    (Policy(subject="u", client_id="c", role="system-admin"), True),  # the role, not a scope
])
def test_may_reindex(p, expected):
    assert Access.may_reindex(p) is expected


def store_check(scope: str, role: str | None, patient: str | None) -> None:
    """``studies(caller, "c")``: decided from the policy alone (no engine, no store)."""
    access = Access(None, None)  # type: ignore[arg-type]
    assert access.studies(Caller(policy(scope, role, patient)), "c") is None


@pytest.mark.parametrize("scope,role", [("user/ImagingStudy.c", "sonographer"),
                                        ("system/*.cruds", None)])
def test_storing_allowed(scope, role):
    store_check(scope, role, None)


@pytest.mark.parametrize("scope,role,patient,message", [
    ("patient/ImagingStudy.c", None, "p1", "storing needs user/ or system/ create rights on "
     "ImagingStudy without a patient or query restriction"),
    ("system/ImagingStudy.c?modality=US", None, None, "storing needs user/ or system/ create "
     "rights on ImagingStudy without a patient or query restriction"),
    ("user/ImagingStudy.c", "trainee", None,
     "the token's scopes do not allow create on ImagingStudy"),
])
def test_storing_refused(scope, role, patient, message):
    with pytest.raises(CoreError) as err:
        store_check(scope, role, patient)
    assert err.value.status == 403
    assert err.value.message == message
    assert err.value.headers == CHALLENGE


@pytest.mark.xfail(reason="studies(caller, 'c') refuses when ANY granting scope is patient- "
                          "or query-restricted, even beside an unrestricted user/ one "
                          "(every_study asks whether one unrestricted scope exists)",
                   strict=True)
def test_storing_allowed_with_a_patient_scope_beside_a_user_scope():
    store_check("user/ImagingStudy.cruds patient/ImagingStudy.c", "sonographer", "p1")

