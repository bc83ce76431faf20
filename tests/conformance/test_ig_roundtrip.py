"""``sonobridge conformance ig`` → ``sonobridge ig load`` round-trips; the server serves the
guide's definitions and ``ImplementationGuide/sonobridge`` over REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sonobridge import jsonio
from sonobridge.app.cli.main import app
from sonobridge.config import Settings
from sonobridge.conformance.ig.build import read_package
from sonobridge.conformance.ig.load import PACKAGE_ONLY_TYPES, ensure_published, load_package
from sonobridge.core.policy import Policy
from sonobridge.core.services import Core, open_core


def _stored(core: Core, res: dict[str, Any]) -> dict[str, Any]:
    stored = core.resources.read(core.server, res["resourceType"], res["id"])
    assert stored.content is not None
    body: dict[str, Any] = jsonio.loads(stored.content)
    body.pop("meta", None)
    return body


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ig")
    result = CliRunner().invoke(app, ["conformance", "ig", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "package.tgz"


def test_cli_round_trip_into_a_fresh_database(package: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONOBRIDGE_AUDIT", "off")
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["ig", "load", str(package), "--data-dir", str(data),
                                      "--examples"])
    assert result.exit_code == 0, result.output
    assert "StructureDefinition" in result.output, result.output
    files = read_package(package)
    core = open_core(Settings(data_dir=data, auth="disabled", audit=False))
    try:
        checked = 0
        for name, res in files.items():
            if name.endswith(("package.json", ".index.json")):
                continue
            if res["resourceType"] in {"CapabilityStatement", *PACKAGE_ONLY_TYPES}:
                continue
            body = _stored(core, res)
            expected = {k: v for k, v in res.items() if k != "meta"}
            if name.startswith("package/example/"):
                # clinical examples may gain what the domains derive on write (e.g. the
                # critical-value acknowledgement extension): every element loaded is kept as is
                body = {k: v for k, v in body.items() if k in expected}
            assert body == expected, name
            checked += 1
        assert checked >= 27
    finally:
        core.close()


def test_load_counts_and_refusals(core: Core, package: Path) -> None:
    caller = core.caller(Policy.system("ig-load", "test"), "local")
    loaded = load_package(core.resources, caller, package)
    assert loaded.counts["StructureDefinition"] == 19  # 7 profiles, 12 extensions
    assert loaded.counts["Basic"] == 4  # the subscription topics (Backport R4 form)
    assert "ViewDefinition" not in loaded.counts
    assert loaded.counts["ImplementationGuide"] == 1
    assert "Patient" not in loaded.counts  # examples only when asked
    assert all(r.startswith("CapabilityStatement/") for r in loaded.refused)
    again = load_package(core.resources, caller, package)  # idempotent: same ids updated
    assert again.counts == loaded.counts


def test_not_a_package(core: Core, tmp_path: Path) -> None:
    import io
    import tarfile

    path = tmp_path / "x.tgz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"{}"
        info = tarfile.TarInfo("other/thing.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="not a FHIR NPM package"):
        load_package(core.resources, core.server, path)


def test_served_over_rest(core: Core, client: Any) -> None:
    first = ensure_published(core.resources, core.server)
    assert first.counts["ImplementationGuide"] == 1 and not first.refused
    assert not ensure_published(core.resources, core.server).counts  # already there
    response = client.get("/fhir/ImplementationGuide/sonobridge")
    assert response.status_code == 200
    guide = response.json()
    assert guide["packageId"] == "sonobridge.fhir.ig"
    found = client.get("/fhir/StructureDefinition", params={"name": "SonoUltrasoundReport"})
    assert found.status_code == 200
    entries = found.json().get("entry", [])
    assert len(entries) == 1
    assert entries[0]["resource"]["snapshot"]["element"]
    vs = client.get("/fhir/ValueSet/sono-critical-finding")
    assert vs.status_code == 200


def test_capability_statement_gzipped_when_asked(client: Any) -> None:
    response = client.get("/fhir/metadata", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == "gzip"
    assert response.json()["resourceType"] == "CapabilityStatement"
