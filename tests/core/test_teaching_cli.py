"""``sonobridge teaching add`` and ``withdraw`` on a stored study (the same service as the
$teaching-case operation)."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.mappings.deid import hmac_uid
from tests.core.test_deid_pixels import burned_cine


def test_add_and_withdraw(core, settings, tmp_path: Path):
    study_uid = generate_uid()
    burned_cine(tmp_path / "a.dcm", "jpeg", frames=3, study_uid=study_uid)
    burned_cine(tmp_path / "b.dcm", "native", frames=2, study_uid=study_uid, number=2,
                regions=False)
    outcome = core.ingest.ingest(core.ingest.receiver.from_file(tmp_path / "a.dcm"),
                                 core.server)
    assert outcome.ok
    options = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    runner = CliRunner()
    result = runner.invoke(app, ["teaching", "add", study_uid, "--keyword", "liver",
                                 "--difficulty", "basic", *options])
    assert result.exit_code == 0, result.output
    case_id = result.stdout.splitlines()[0].split("/")[1]
    assert "3 frame(s) cleaned" in result.stdout
    key = (settings.data_dir / "keys" / "deid.key").read_text().strip().encode()
    assert core.archive.has(hmac_uid(key, study_uid))
    again = runner.invoke(app, ["teaching", "add", study_uid, *options])
    assert again.exit_code == 1 and "409" in again.output
    result = runner.invoke(app, ["teaching", "withdraw", case_id, *options])
    assert result.exit_code == 0, result.output
    assert not core.archive.has(hmac_uid(key, study_uid))
    # an object that cannot be cleaned: exit 1 with the reason, nothing published
    core.ingest.ingest(core.ingest.receiver.from_file(tmp_path / "b.dcm"), core.server)
    result = runner.invoke(app, ["teaching", "add", study_uid, "--force", *options])
    assert result.exit_code == 1 and "no ultrasound regions" in " ".join(result.output.split())
    assert not core.archive.has(hmac_uid(key, study_uid))
    bad = runner.invoke(app, ["teaching", "add", study_uid, "--difficulty", "x", *options])
    assert bad.exit_code == 1 and "difficulty" in bad.output
