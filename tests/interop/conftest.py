"""End-to-end tests with real third-party clients: the SMART world of ``tests/auth`` and the
DICOM test objects."""

from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures, shared
from tests.dicom_data import us_files  # noqa: F401 - a fixture, shared
