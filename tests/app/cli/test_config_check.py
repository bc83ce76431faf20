"""``sonobridge config check``: sources, unknown names with a suggestion, invalid values, no
secrets printed."""

from __future__ import annotations

from typer.testing import CliRunner

from sonobridge.app.cli.config_check import check
from sonobridge.app.cli.main import app


def test_sources_unknown_names_and_secrets(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('http_port = 9090\n')
    rows, problems, error = check({
        "SONOBRIDGE_CONFIG": str(toml), "SONOBRIDGE_DICOM_PROT": "104",
        "SONOBRIDGE_DATABASE_URL": "postgresql://sono:s3cret@db:5432/sono",
        "SONOBRIDGE_DATA_DIR": str(tmp_path), "SONOBRIDGE_TEST_POSTGRES_URL": "x"})
    assert error is None
    by_name = {r[0]: r for r in rows}
    assert by_name["http_port"][2:] == ("9090", f"file {toml}")
    assert by_name["database_url"][2:] == ("postgresql://sono:•••@db:5432/sono", "environment")
    assert by_name["mllp_port"][3] == "default"
    assert problems == ["SONOBRIDGE_DICOM_PROT is not a SonoBridge setting and is ignored "
                        "(did you mean SONOBRIDGE_DICOM_PORT?)"]
    assert "s3cret" not in repr(rows)


def test_invalid_value_exits_1(tmp_path):
    result = CliRunner().invoke(app, ["config", "check"], env={
        "SONOBRIDGE_DICOM_PORT": "70000", "SONOBRIDGE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "DICOM port out of range: 70000" in result.output
    ok = CliRunner().invoke(app, ["config", "check"], env={
        "SONOBRIDGE_HTTP_PORT": "8181", "SONOBRIDGE_DATA_DIR": str(tmp_path)})
    assert ok.exit_code == 0, ok.output
    assert "8181" in ok.output and "settings are valid" in ok.output
