"""The remote-ultrasound team's roles and what ``user/`` scopes may do for each.

The three administrators are separate roles (GB/T 22239 level 3 separation of duties): the
system administrator runs the service, the security administrator manages users and clients,
the audit administrator reads the audit trail, and none of them reads clinical data.
"""

from __future__ import annotations

ROLES = ("referring-clinician", "sonographer", "remote-expert", "qc-officer", "trainer",
         "trainee", "system-admin", "security-admin", "audit-admin",
         # Remote consultation (core/consultation.py): the requesting clinic's medical-affairs
         # office (医务科) reviews requests; the consulting side's dispatcher accepts, triages
         # and schedules them.
         "medical-affairs", "consultation-dispatcher")
ADMIN_ROLES = ("system-admin", "security-admin", "audit-admin")
# Roles that must use a second factor (TOTP) to log in.
TWO_FACTOR_ROLES = ("remote-expert", *ADMIN_ROLES)

_CLINICAL = ("Patient", "Practitioner", "PractitionerRole", "Organization", "Location",
             "Endpoint", "Device", "ServiceRequest", "Task", "Encounter", "Appointment",
             "Communication", "ImagingStudy", "DiagnosticReport", "Observation", "Media",
             "DocumentReference", "QuestionnaireResponse", "Questionnaire", "MeasureReport",
             "Provenance", "Consent", "Binary", "Condition", "Procedure", "List", "Composition")

# role -> {resource type or "*": permissions}; reading covers r and s.
_RULES: dict[str, dict[str, str]] = {
    "referring-clinician": {"*": "rs", "ServiceRequest": "cruds", "Task": "cruds",
                            "Communication": "cruds", "Appointment": "cruds",
                            "Patient": "cruds", "Encounter": "cruds", "Consent": "cruds"},
    "sonographer": {"*": "rs", "ImagingStudy": "cruds", "Media": "cruds",
                    "Observation": "cruds", "Task": "crus", "Communication": "cruds",
                    "Patient": "crus", "Encounter": "crus"},
    "remote-expert": {"*": "cruds"},
    "qc-officer": {"*": "rs", "QuestionnaireResponse": "cruds", "Observation": "cruds",
                   "MeasureReport": "cruds", "Task": "crus"},
    "trainer": {"*": "rs", "Task": "cruds", "QuestionnaireResponse": "cruds",
                "Questionnaire": "cruds", "Practitioner": "crus",
                # teaching cases (core/teaching.py) and courses (core/training.py)
                "DocumentReference": "cruds", "PlanDefinition": "cruds",
                # a course's recorded sessions (MP4 Binary behind a DocumentReference)
                "Binary": "cruds"},
    "trainee": {"*": "rs", "QuestionnaireResponse": "cruds", "Task": "rus"},
    "system-admin": {"Endpoint": "cruds", "Device": "cruds", "Organization": "cruds",
                     "Location": "cruds", "CapabilityStatement": "rs",
                     "SearchParameter": "cruds"},
    "security-admin": {"Practitioner": "crus", "PractitionerRole": "crus",
                       "Organization": "rs"},
    "audit-admin": {"AuditEvent": "rs", "Provenance": "rs"},
    "medical-affairs": {"*": "rs", "Task": "rus", "ServiceRequest": "rus",
                        "Communication": "cruds"},
    "consultation-dispatcher": {"*": "rs", "Task": "rus", "Appointment": "cruds",
                                "Schedule": "cruds", "Slot": "cruds", "Communication": "cruds"},
}
_NO_AUDIT_FOR = {r for r in ROLES if r != "audit-admin"}


def role_allows(role: str | None, resource_type: str, permission: str) -> bool:
    if role is None:
        return False
    if resource_type == "AuditEvent" and role in _NO_AUDIT_FOR:
        return False  # the audit trail is the audit administrator's alone
    rules = _RULES.get(role, {})
    allowed = rules.get(resource_type, rules.get("*", ""))
    return permission in allowed


# The trainee sees teaching material only (issue 16): on the types that hold patient data, a
# teaching-only role reads, searches, updates and deletes only resources carrying this
# security label (set by core/teaching.py on a teaching case's de-identified copy, its pseudo
# patient and its reports; a trainer sets it on a course's reviewed recordings), or its own
# training records (TRAINING_RECORDS). core/access.py applies the rule.
TEACHING_ONLY_ROLES = ("trainee",)
TEACHING_LABEL = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "PSEUDED")
# type -> the search parameter (and the element path) naming the trainee in its own records:
# assignments, assessments, live sessions attended and booked.
TRAINING_RECORDS = {"Task": ("owner", ("owner",)),
                    "QuestionnaireResponse": ("author", ("author",)),
                    "Encounter": ("participant", ("participant", "individual")),
                    "Appointment": ("actor", ("participant", "actor"))}


def teaching_only(role: str | None) -> bool:
    return role in TEACHING_ONLY_ROLES
