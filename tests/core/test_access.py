"""``sonobridge.core.access``: the decisions that need no database.

``require`` (a ``Forbidden`` becomes a 403 ``CoreError`` with ``WWW-Authenticate``),
``may_use`` (DIMSE services), and the static ``Access.search_types``, ``Access.search_terms``
(the compartment a confined search is driven by), ``grants_for`` (each scope as a grant),
``Access.every_study`` and ``Access.may_reindex``; and ``Access.studies`` for storing, which
does not touch the index. Searches that apply the grants: ``tests/security``.
Rows are (scopes, role, patient, …, expected).
"""

from __future__ import annotations

import pytest

from sonobridge.core.access import Access, forbidden, grants_for, may_use, require
from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.scopes import resource_scopes
from sonobridge.core.search.engine import Compartment, Grant
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
    # unrestricted scopes confine nothing
    ("user/*.rs", "remote-expert", None, ["Observation"], None, None),
    ("system/*.rs", None, None, [], None, None),
    # patient scopes confine to the patient in context (the compartment drives the query)
    ("patient/*.rs", None, "p1", ["Observation"], None, P1),
    ("patient/*.rs", None, "p1", [], None, P1),
    ("patient/*.rs", None, "p1", ["Observation"], P1, P1),
    ("patient/Observation.rs?category=a", None, "p1", ["Observation"], None, P1),
    # a broader scope beside the patient one: not confined as a whole (grants_for is exact)
    ("patient/Observation.rs user/Observation.rs", "remote-expert", "p1", ["Observation"], None,
     None),
    ("patient/Observation.rs system/Patient.rs", None, "p1", ["Observation", "Patient"], None,
     None),
    # a compartment asked for by an unconfined caller is kept
    ("user/*.rs", "remote-expert", None, ["Observation"], Compartment("Patient", "p2"),
     Compartment("Patient", "p2")),
    ("user/Observation.rs?category=laboratory", "qc-officer", None, ["Observation"], None, None),
])
def test_search_terms(scope, role, patient, types, given, expected):
    assert Access.search_terms(policy(scope, role, patient), types, given) == (expected, [])


@pytest.mark.parametrize("scope,role,patient,res_type,expected", [
    ("system/*.rs", None, None, "Observation", None),
    ("user/*.rs", "remote-expert", None, "Observation", None),
    ("patient/*.rs", None, "p1", "Observation", [Grant(P1)]),
    ("patient/Observation.rs?category=laboratory patient/Patient.rs", None, "p1",
     "Observation", [Grant(P1, (("category", "laboratory"),))]),
    ("patient/Observation.rs?category=laboratory patient/Patient.rs", None, "p1", "Patient",
     [Grant(P1)]),
    # a patient scope's filter stays in its compartment; a user scope's filter goes anywhere
    ("patient/Observation.rs?category=laboratory user/Observation.rs?code=x", "remote-expert",
     "p1", "Observation", [Grant(P1, (("category", "laboratory"),)),
                           Grant(None, (("code", "x"),))]),
    ("patient/Observation.rs?category=a patient/Observation.rs", None, "p1", "Observation",
     [Grant(P1, (("category", "a"),)), Grant(P1)]),
    ("user/Observation.rs?category=a user/Observation.rs", "remote-expert", None,
     "Observation", None),
    # a patient scope without a patient in context grants nothing; the other scope decides
    ("patient/Observation.rs?category=a system/Observation.rs", None, None, "Observation",
     None),
    ("patient/Observation.rs", None, None, "Observation", []),
    ("user/Patient.rs", "remote-expert", None, "Observation", []),
])
def test_grants_for(scope, role, patient, res_type, expected):
    assert grants_for(policy(scope, role, patient), res_type, "s") == expected


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


def test_storing_allowed_with_a_patient_scope_beside_a_user_scope():
    store_check("user/ImagingStudy.cruds patient/ImagingStudy.c", "sonographer", "p1")

