"""SMART-on-FHIR authorization: the OAuth 2 server (authlib), tokens, scopes and the policy
every edge asks, users with two factors, and the audit trail."""
