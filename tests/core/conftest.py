"""The core's tests may use the SMART world of ``tests/auth`` (authorization and audit on)."""

from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures, shared
