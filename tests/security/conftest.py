"""Security regression tests: the SMART world of ``tests/auth`` (authorization and audit on)."""

from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures, shared
from tests.dicom_data import us_files  # noqa: F401 - a fixture, shared
