"""FHIR R4 REST: interactions, bundles, formats, validation and the CapabilityStatement."""
