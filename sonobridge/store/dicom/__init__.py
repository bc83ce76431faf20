"""DICOM storage: the one ingest path, the Part 10 header and frame-table parser, the index."""
