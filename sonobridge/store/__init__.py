"""Persistence: the database engine and migrations, the versioned FHIR resource store, blobs."""
