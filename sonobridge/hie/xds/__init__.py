"""IHE XDS.b and XDS-I.b (STANDARDS.md §12, docs/exchange.md), both directions.

- Inbound (SonoBridge as Document Registry + Repository + Imaging Document Source):
  ``endpoints.py`` serves ``/xds/registry`` (ITI-18 FindDocuments, GetDocuments,
  GetSubmissionSets, GetAssociations), ``/xds/repository`` (ITI-41, ITI-43), ``/xds/imaging``
  (RAD-69) and the WSDL at ``/xds/wsdl``; ``registry.py`` and ``imaging.py`` do the work on the
  core (DocumentReference + Binary + MHD List: one document store for FHIR, MHD and XDS).
- Outbound (Document Source): ``outbound.py`` queues a final report's WS/T 500.6 CDA as a
  FHIR Task and sends it by ITI-41 to ``SONOBRIDGE_XDS_REPOSITORY_URL``.
- ``soap.py`` (SOAP 1.2, WS-Addressing, MTOM/XOP), ``ebrim.py`` (ebRIM 3.0 metadata),
  ``entries.py`` (DocumentReference <-> DocumentEntry), ``xml.py`` (safe parsing, schemas).
"""
