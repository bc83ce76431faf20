"""SQL on FHIR v2: ViewDefinitions compiled (``definition``), run over resources
(``runner``), written as CSV, NDJSON, JSON or Parquet (``output``), and streamed over the
store for a caller (``service``: ``ViewDefinition/$run``)."""
