"""``sonobridge.core.policy``: what one caller's scopes, role and patient context allow.

``Policy.grants`` and ``require`` as a table of (scopes, role, patient, type, permission,
allowed): ``patient/`` scopes (nothing without a patient in context), ``user/`` scopes bounded
by the role (``core/roles.py``), ``system/`` scopes, v1 scopes, query-restricted scopes, and
AuditEvent for the audit administrator alone. Then ``compartment``, ``filters``, the
unrestricted policies, ``from_claims`` and ``Caller``.
"""

from __future__ import annotations

import pytest

from sonobridge.core.policy import DIMSE_SERVICES, Caller, Forbidden, Policy
from sonobridge.core.roles import ADMIN_ROLES, ROLES, TWO_FACTOR_ROLES, role_allows
from sonobridge.core.scopes import ResourceScope, resource_scopes


def policy(scope: str, role: str | None = None, patient: str | None = None) -> Policy:
    return Policy(subject="u1", client_id="app", scopes=tuple(resource_scopes(scope)),
                  patient=patient, role=role, raw_scope=scope)


GRANTS = [
    # scopes, role, patient, type, permission, allowed
    # patient/ scopes: need a patient in context, not a role
    ("patient/Observation.rs", None, "p1", "Observation", "r", True),
    ("patient/Observation.rs", None, "p1", "Observation", "s", True),
    ("patient/Observation.rs", None, "p1", "Observation", "c", False),
    ("patient/Observation.rs", None, "p1", "Patient", "r", False),
    ("patient/Observation.rs", None, None, "Observation", "r", False),
    ("patient/Observation.rs", None, "", "Observation", "r", False),
    ("patient/*.cruds", None, "p1", "Condition", "d", True),
    ("patient/*.cruds", "trainee", "p1", "Condition", "d", False),  # the role bounds it too
    ("patient/*.cruds", "trainee", "p1", "Condition", "r", True),
    ("patient/*.cruds", "trainee", "p1", "QuestionnaireResponse", "c", True),
    ("patient/*.cruds", None, "p1", "Condition", "d", True),  # no user: no role to bound it
    # user/ scopes: bounded by the role
    ("user/*.cruds", "remote-expert", None, "Observation", "d", True),
    ("user/*.cruds", "sonographer", None, "ImagingStudy", "c", True),
    ("user/*.cruds", "sonographer", None, "Task", "u", True),
    ("user/*.cruds", "sonographer", None, "Task", "d", False),
    ("user/*.cruds", "sonographer", None, "DiagnosticReport", "r", True),
    ("user/*.cruds", "sonographer", None, "DiagnosticReport", "c", False),
    ("user/*.cruds", "referring-clinician", None, "ServiceRequest", "c", True),
    ("user/*.cruds", "referring-clinician", None, "Observation", "u", False),
    ("user/*.cruds", "trainee", None, "QuestionnaireResponse", "c", True),
    ("user/*.cruds", "trainee", None, "Task", "c", False),
    ("user/*.cruds", "qc-officer", None, "MeasureReport", "d", True),
    ("user/*.cruds", "trainer", None, "Questionnaire", "c", True),
    ("user/Observation.rs", "remote-expert", None, "Observation", "c", False),  # scope bounds
    ("user/*.cruds", None, None, "Observation", "r", False),  # no role: nothing
    ("user/*.cruds", "unknown-role", None, "Observation", "r", False),
    ("user/*.cruds", "system-admin", None, "Patient", "r", False),  # no clinical data
    ("user/*.cruds", "system-admin", None, "Endpoint", "c", True),
    ("user/*.cruds", "security-admin", None, "Practitioner", "u", True),
    ("user/*.cruds", "security-admin", None, "Practitioner", "d", False),
    ("user/*.cruds", "security-admin", None, "Observation", "r", False),
    ("user/*.cruds", "audit-admin", None, "Provenance", "r", True),
    ("user/*.cruds", "audit-admin", None, "Observation", "r", False),
    # user/ scopes with a patient in context are still user/ scopes
    ("user/Observation.rs", "remote-expert", "p1", "Observation", "r", True),
    # system/ scopes: no role, no patient
    ("system/*.cruds", None, None, "Observation", "c", True),
    ("system/Patient.rs", None, None, "Patient", "s", True),
    ("system/Patient.rs", None, None, "Patient", "u", False),
    ("system/Patient.rs", None, None, "Observation", "r", False),
    # v1 scopes
    ("patient/Observation.read", None, "p1", "Observation", "s", True),
    ("patient/Observation.read", None, "p1", "Observation", "u", False),
    ("user/*.write", "remote-expert", None, "Media", "u", True),
    ("user/*.write", "remote-expert", None, "Media", "r", False),
    ("system/*.*", None, None, "Device", "d", True),
    # query-restricted scopes still grant (the restriction is a filter)
    ("patient/Observation.rs?category=laboratory", None, "p1", "Observation", "s", True),
    ("user/Observation.rs?category=laboratory", "qc-officer", None, "Observation", "r", True),
    # AuditEvent: the audit administrator, through a user/ scope, only
    ("user/AuditEvent.rs", "audit-admin", None, "AuditEvent", "r", True),
    ("user/*.rs", "audit-admin", None, "AuditEvent", "s", True),
    ("user/*.cruds", "audit-admin", None, "AuditEvent", "c", False),
    ("user/AuditEvent.rs", "remote-expert", None, "AuditEvent", "r", False),
    ("user/*.cruds", "system-admin", None, "AuditEvent", "r", False),
    ("system/AuditEvent.rs", None, None, "AuditEvent", "r", False),
    ("system/*.cruds", "audit-admin", None, "AuditEvent", "r", False),
    ("patient/AuditEvent.rs", "audit-admin", "p1", "AuditEvent", "r", False),
    ("patient/*.rs", None, "p1", "AuditEvent", "s", False),
    # several scopes: any one that allows is enough
    ("patient/Observation.rs user/Patient.rs", "sonographer", None, "Patient", "r", True),
    ("patient/Observation.rs user/Patient.rs", "sonographer", None, "Observation", "r",
     False),
    ("", "remote-expert", "p1", "Observation", "r", False),  # no resource scopes
    ("openid fhirUser launch/patient", "remote-expert", "p1", "Observation", "r", False),
]


@pytest.mark.parametrize("scope,role,patient,res_type,permission,allowed", GRANTS)
def test_grants_and_require(scope, role, patient, res_type, permission, allowed):
    p = policy(scope, role, patient)
    granted = p.grants(res_type, permission)
    assert bool(granted) is allowed
    for s in granted:
        assert s in p.scopes and s.covers(res_type, permission)
    if allowed:
        assert p.require(res_type, permission) == granted
    else:
        with pytest.raises(Forbidden):
            p.require(res_type, permission)


def test_grants_lists_every_scope_that_allows_in_order():
    p = policy("patient/Observation.rs user/*.read system/Observation.s user/Patient.rs",
               "remote-expert", "p1")
    assert [s.text() for s in p.grants("Observation", "s")] == [
        "patient/Observation.rs", "user/*.rs", "system/Observation.s"]
    assert [s.text() for s in p.grants("Observation", "r")] == [
        "patient/Observation.rs", "user/*.rs"]


@pytest.mark.parametrize("permission,word", [("c", "create"), ("r", "read"), ("u", "update"),
                                             ("d", "delete"), ("s", "search")])
def test_forbidden_message(permission, word):
    with pytest.raises(Forbidden) as err:
        policy("patient/Patient.rs", None, "p1").require("Observation", permission)
    assert str(err.value) == f"the token's scopes do not allow {word} on Observation"


@pytest.mark.parametrize("scope,role,patient,res_type,expected", [
    ("patient/Observation.rs", None, "p1", "Observation", "p1"),
    ("patient/*.rs patient/Observation.rs", None, "p1", "Observation", "p1"),
    ("user/Observation.rs", "remote-expert", "p1", "Observation", None),
    ("system/Observation.rs", None, None, "Observation", None),
    # a broader scope beside a patient one: not confined
    ("patient/Observation.rs user/Observation.rs", "remote-expert", "p1", "Observation", None),
    ("patient/Observation.rs system/*.rs", None, "p1", "Observation", None),
    # a user's role bounds both its user/ and its patient/ scopes
    ("patient/Observation.rs user/Observation.rs", "sonographer", "p1", "Observation", None),
    ("patient/Observation.rs", "sonographer", "p1", "Observation", "p1"),
])
def test_compartment(scope, role, patient, res_type, expected):
    assert policy(scope, role, patient).compartment(res_type, "r") == expected


def test_compartment_raises_when_nothing_allows():
    with pytest.raises(Forbidden):
        policy("patient/Observation.rs", None, None).compartment("Observation", "r")


@pytest.mark.parametrize("scope,role,patient,expected", [
    ("user/Observation.rs", "remote-expert", None, [()]),
    ("user/Observation.rs?category=laboratory", "remote-expert", None,
     [(("category", "laboratory"),)]),
    ("patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs",
     None, "p1", [(("category", "laboratory"),), (("category", "vital-signs"),)]),
    ("patient/Observation.rs?category=laboratory&status=final user/*.rs", "trainee", "p1",
     [(("category", "laboratory"), ("status", "final")), ()]),
    # a restricted scope that does not apply (no patient in context) adds no filter
    ("patient/Observation.rs?category=laboratory system/Observation.s", None, None, [()]),
])
def test_filters(scope, role, patient, expected):
    assert policy(scope, role, patient).filters("Observation", "s") == expected


def test_filters_raise_when_nothing_allows():
    with pytest.raises(Forbidden):
        policy("user/Observation.rs", "remote-expert").filters("Patient", "s")


@pytest.mark.parametrize("p", [Policy.open(), Policy.system("hl7:HIS", "HIS")])
def test_unrestricted_policies(p):
    assert p.unrestricted
    assert p.require("AuditEvent", "d") == []
    assert p.compartment("Observation", "r") is None
    assert p.filters("Observation", "s") == [()]
    assert p.grants("Observation", "r") == []  # no scopes: grants is about scopes only


def test_open_and_system_policies():
    assert Policy.open() == Policy(subject="anonymous", client_id="", unrestricted=True)
    dimse = Policy.system("dicom:CART1", "CART1", frozenset({"echo", "store"}))
    assert (dimse.subject, dimse.client_id, dimse.services) == \
        ("dicom:CART1", "CART1", frozenset({"echo", "store"}))
    assert Policy.system("sonobridge").services == frozenset()
    assert DIMSE_SERVICES == ("echo", "store", "find", "move", "get", "worklist", "mpps",
                              "commit")


def test_from_claims():
    p = Policy.from_claims({"sub": "alice", "client_id": "viewer", "jti": "t1",
                            "scope": "openid patient/Observation.rs user/*.read",
                            "patient": "p9", "role": "sonographer",
                            "fhirUser": "Practitioner/7"})
    assert p == Policy(subject="alice", client_id="viewer",
                       scopes=(ResourceScope("patient", "Observation", frozenset("rs")),
                               ResourceScope("user", "*", frozenset("rs"))),
                       patient="p9", role="sonographer", fhir_user="Practitioner/7",
                       token_id="t1", raw_scope="openid patient/Observation.rs user/*.read")
    assert not p.unrestricted


def test_from_claims_sparse():
    p = Policy.from_claims({"patient": 12})  # a patient that is not a string is ignored
    assert p == Policy(subject="", client_id="", scopes=(), patient=None, role=None,
                       fhir_user=None, token_id="", raw_scope="")


def test_caller_patient_reference_and_derived():
    p = policy("patient/*.rs", None, "p1")
    caller = Caller(p, base="http://h/fhir", address="10.0.0.1", audited=False,
                    username="alice")
    assert caller.patient_reference == "Patient/p1"
    assert Caller(policy("user/*.rs", "trainee")).patient_reference is None
    derived = caller.derived()
    assert derived.policy == Policy(subject="u1", client_id="app", unrestricted=True)
    assert (derived.base, derived.address, derived.audited, derived.username) == \
        ("http://h/fhir", "10.0.0.1", False, "alice")
    open_caller = Caller(Policy.open())
    assert open_caller.derived() is open_caller


# ------------------------------------------------------------------------------ roles


@pytest.mark.parametrize("role,res_type,permission,expected", [
    (None, "Observation", "r", False),
    ("nobody", "Observation", "r", False),
    ("remote-expert", "Observation", "d", True),
    ("remote-expert", "AuditEvent", "r", False),
    ("audit-admin", "AuditEvent", "r", True),
    ("audit-admin", "AuditEvent", "u", False),
    ("sonographer", "Patient", "d", False),
    ("sonographer", "Patient", "u", True),
    ("trainee", "Task", "c", False),
    ("trainee", "Task", "u", True),
    ("system-admin", "CapabilityStatement", "r", True),
    ("system-admin", "CapabilityStatement", "u", False),
    ("system-admin", "Observation", "r", False),
    ("security-admin", "Organization", "r", True),
    ("security-admin", "Organization", "c", False),
])
def test_role_allows(role, res_type, permission, expected):
    assert role_allows(role, res_type, permission) is expected


def test_role_lists():
    assert set(ADMIN_ROLES) <= set(ROLES)
    assert TWO_FACTOR_ROLES == ("remote-expert", "system-admin", "security-admin",
                                "audit-admin")
