"""The DICOM Conformance Statement (PS3.2): ``facts.py`` says what is served, as plain data
the composition layer gathers from the DIMSE and DICOMweb edges; ``statement.py`` writes the
PS3.2 document from it; ``render.py`` makes Markdown, HTML and PDF of it."""

from sonobridge.conformance.dicom.facts import (
    Context,
    DicomFacts,
    MediaOffer,
    WebResource,
)
from sonobridge.conformance.dicom.render import FORMATS, render
from sonobridge.conformance.dicom.statement import statement

__all__ = ["FORMATS", "Context", "DicomFacts", "MediaOffer", "WebResource", "render",
           "statement"]
