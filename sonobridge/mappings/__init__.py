"""Pure converters between DICOM, HL7 v2, CDA and FHIR: data in, data out; no I/O, no clock."""
