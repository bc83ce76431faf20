"""Backup, restore and verify, as a restore drill: data loaded, a backup taken while writes go
on, restored into an empty place, compared; a tampered backup, a non-empty target and a lost
blob are each refused or reported."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sonobridge.app.cli.main import app
from sonobridge.store.db import make_engine
from tests.conftest import PG_URL, S3_BLOBS
from tests.dicom_data import cine
from tests.dicomweb.helpers import stow

pytestmark = pytest.mark.skipif(S3_BLOBS, reason="file-store drill (S3 is listed, not copied)")


def flat(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _env(data_dir: Path, url: str) -> dict[str, str]:
    return {"SONOBRIDGE_DATA_DIR": str(data_dir), "SONOBRIDGE_DATABASE_URL": url,
            "COLUMNS": "1000"}  # rich wraps long blob keys at the terminal's width


def _ids(url: str) -> set[tuple[str, str]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT res_type, res_id FROM resources")).all()
    engine.dispose()
    return {(r[0], r[1]) for r in rows}


@pytest.fixture
def target(db_url: str, tmp_path: Path):
    """An empty place to restore into: a new data directory and an empty database."""
    data = tmp_path / "restored"
    if db_url.startswith("sqlite"):
        yield data, f"sqlite:///{data / 'sonobridge.db'}"
        return
    name = f"sbrestore_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    yield data, f"{base}/{name}?{db_url.split('?', 1)[1]}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_restore_drill(client, settings, tmp_path: Path, target):
    runner = CliRunner()
    source_url = settings.resolved_database_url
    datasets = [cine("jpeg", frames=3, seed=s) for s in range(3)]
    assert stow(client, datasets).status_code == 200
    for n in range(5):
        assert client.post("/fhir/Patient", json={"resourceType": "Patient",
                                                  "name": [{"family": f"P{n}"}]}).status_code == 201
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            client.post("/fhir/Observation", json={
                "resourceType": "Observation", "status": "final", "code": {"text": "x"}})

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result = runner.invoke(app, ["backup", str(tmp_path / "bk")],
                               env=_env(settings.data_dir, source_url))
    finally:
        stop.set()
        writer.join()
    assert result.exit_code == 0, result.output
    assert "backup complete" in flat(result)
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["counts"]["instances"] == 3 and manifest["blob_store"] == "files"
    assert not (tmp_path / "bk.partial").exists()

    data, url = target
    result = runner.invoke(app, ["restore", str(tmp_path / "bk")], env=_env(data, url))
    assert result.exit_code == 0, result.output
    restored = _ids(url)
    assert {("Patient", i) for t, i in restored if t == "Patient"} and \
        sum(1 for t, _ in restored if t == "Patient") >= 5
    assert sum(1 for t, _ in restored if t == "ImagingStudy") == 3
    # What the backup holds is a subset of the source now (writes went on after it).
    assert restored <= _ids(source_url)
    result = runner.invoke(app, ["verify"], env=_env(data, url))
    assert result.exit_code == 0, result.output
    assert "3 DICOM objects" in flat(result) and "audit chain intact" in flat(result)
    # The restored gateway serves the restored frames.
    from starlette.testclient import TestClient

    from sonobridge.app.server import create_app
    from sonobridge.config import Settings

    restored_settings = Settings(data_dir=data, database_url=url, auth="disabled", audit=False)
    with TestClient(create_app(restored_settings)) as again:
        ds = datasets[0]
        r = again.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                      f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/2",
                      headers={"Accept": "multipart/related; type=\"application/octet-stream\"; "
                                         "transfer-syntax=*"})
        assert r.status_code == 200 and len(r.content) > 100

    # Restoring again over data is refused; --force overwrites.
    result = runner.invoke(app, ["restore", str(tmp_path / "bk")], env=_env(data, url))
    assert result.exit_code == 1 and "already holds data" in flat(result)
    result = runner.invoke(app, ["restore", "--force", str(tmp_path / "bk")],
                           env=_env(data, url))
    assert result.exit_code == 0, result.output


def test_tampered_backup_and_lost_blob(client, settings, tmp_path: Path):
    runner = CliRunner()
    env = _env(settings.data_dir, settings.resolved_database_url)
    [ds] = [cine("jpeg", frames=2, seed=9)]
    assert stow(client, [ds]).status_code == 200
    assert runner.invoke(app, ["backup", str(tmp_path / "bk")], env=env).exit_code == 0
    blob = next((tmp_path / "bk" / "blobs").rglob("*.dcm"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one byte changed
    blob.write_bytes(bytes(data))
    empty = tmp_path / "empty"
    result = runner.invoke(app, ["restore", str(tmp_path / "bk")],
                           env=_env(empty, f"sqlite:///{empty / 'sonobridge.db'}"))
    assert result.exit_code == 1 and "does not match its checksum" in flat(result)
    assert not (empty / "sonobridge.db").exists()
    # Not a backup at all.
    (tmp_path / "notbk").mkdir()
    result = runner.invoke(app, ["restore", str(tmp_path / "notbk")],
                           env=_env(empty, f"sqlite:///{empty / 'sonobridge.db'}"))
    assert result.exit_code == 1 and "no manifest.json" in flat(result)
    # A backup into a directory that holds something is refused.
    result = runner.invoke(app, ["backup", str(tmp_path / "bk")], env=env)
    assert result.exit_code == 1 and "not empty" in flat(result)
    # A blob lost from the store: verify says which, exit 1; the backup reports it too.
    key = next(iter(settings_blobs(settings).keys("dicom/")))
    settings_blobs(settings).delete(key)
    result = runner.invoke(app, ["verify"], env=env)
    assert result.exit_code == 1 and f"blob {key} is missing" in flat(result)


def settings_blobs(settings):
    from sonobridge.store.blobs import open_blob_store

    return open_blob_store(settings.resolved_blob_url, settings.data_dir / "incoming")
