"""The remote-ultrasound team's roles and what ``user/`` scopes may do for each.

The three administrators are separate roles (GB/T 22239 level 3 separation of duties): the
system administrator runs the service, the security administrator manages users and clients,
the audit administrator reads the audit trail, and none of them reads clinical data.
"""

from __future__ import annotations

ROLES = ("referring-clinician", "sonographer", "remote-expert", "qc-officer", "trainer",
         "trainee", "system-admin", "security-admin", "audit-admin")
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
                "Questionnaire": "cruds", "Practitioner": "crus"},
    "trainee": {"*": "rs", "QuestionnaireResponse": "cruds", "Task": "rus"},
    "system-admin": {"Endpoint": "cruds", "Device": "cruds", "Organization": "cruds",
                     "Location": "cruds", "CapabilityStatement": "rs",
                     "SearchParameter": "cruds"},
    "security-admin": {"Practitioner": "crus", "PractitionerRole": "crus",
                       "Organization": "rs"},
    "audit-admin": {"AuditEvent": "rs", "Provenance": "rs"},
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
