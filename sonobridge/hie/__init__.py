"""Bridges to the outside: HL7 v2 over MLLP (``mllp/``), DICOM DIMSE (``dimse/``)."""
