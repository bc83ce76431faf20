"""Settings from defaults, a TOML file, the environment and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonobridge.config import ConfigError, Settings


def test_defaults():
    s = Settings.load({})
    assert (s.http_host, s.http_port, s.data_dir) == ("127.0.0.1", 8080, Path("data"))
    assert s.resolved_database_url.startswith("sqlite:///") and \
        s.resolved_database_url.endswith("data/sonobridge.db")
    assert s.resolved_blob_url.endswith("data/blobs")
    assert s.is_loopback


def test_environment_and_overrides(tmp_path):
    env = {"SONOBRIDGE_HTTP_PORT": "9000", "SONOBRIDGE_DATA_DIR": str(tmp_path),
           "SONOBRIDGE_MAX_BODY_SIZE": "2MB", "SONOBRIDGE_LOG_FORMAT": "json",
           "SONOBRIDGE_DATABASE_URL": "postgresql://u@h/db",
           "SONOBRIDGE_BASE_URL": "https://gw.example.org"}
    s = Settings.load(env, http_port=9100)
    assert s.http_port == 9100 and s.data_dir == tmp_path
    assert s.max_body_size == 2 * 1024 * 1024 and s.log_format == "json"
    assert s.resolved_database_url == "postgresql://u@h/db"
    assert s.base_url == "https://gw.example.org"


def test_toml_file(tmp_path):
    path = tmp_path / "sono.toml"
    path.write_text('http_port = 8181\nlog_format = "json"\n')
    s = Settings.load({"SONOBRIDGE_CONFIG": str(path), "SONOBRIDGE_LOG_FORMAT": "text"})
    assert s.http_port == 8181 and s.log_format == "text"  # environment beats the file
    path.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown settings"):
        Settings.load({"SONOBRIDGE_CONFIG": str(path)})


@pytest.mark.parametrize("env", [{"SONOBRIDGE_HTTP_PORT": "http"},
                                 {"SONOBRIDGE_HTTP_PORT": "70000"},
                                 {"SONOBRIDGE_LOG_FORMAT": "xml"},
                                 {"SONOBRIDGE_MAX_BODY_SIZE": "lots"},
                                 {"SONOBRIDGE_BASE_URL": "gw.example.org"}])
def test_bad_values_are_explained(env):
    with pytest.raises(ConfigError):
        Settings.load(env)


def test_loopback_detection():
    assert Settings(http_host="::1").is_loopback
    assert Settings(http_host="localhost").is_loopback
    assert not Settings(http_host="0.0.0.0").is_loopback
