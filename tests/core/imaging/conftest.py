"""Imaging tests use the DICOM test objects."""

from tests.dicom_data import us_files  # noqa: F401 - a fixture, shared
