"""An app with authorization and the audit trail on (the other suites run with both off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sonobridge.app.compose import open_app_core as open_core
from sonobridge.app.server import create_app
from sonobridge.config import Settings
from tests.auth.smart import Smart

P1 = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Li", "given": ["Na"]}],
      "birthDate": "1980-02-03"}
P2 = {"resourceType": "Patient", "id": "p2", "name": [{"family": "Wang", "given": ["Wei"]}]}


def observation(oid: str, patient: str, category: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "observation-category", "code": category}]}],
            "code": {"text": "finding"}, "subject": {"reference": f"Patient/{patient}"}}


CLINICAL = [
    P1, P2,
    observation("o1", "p1", "laboratory"), observation("o2", "p2", "laboratory"),
    observation("o3", "p1", "vital-signs"),
    {"resourceType": "ImagingStudy", "id": "1.2.3.1", "status": "available",
     "subject": {"reference": "Patient/p1"}},
    {"resourceType": "ImagingStudy", "id": "1.2.3.2", "status": "available",
     "subject": {"reference": "Patient/p2"}},
    # p1's report whose result points (wrongly) at p2's Observation: an _include path that
    # must not leak o2 to a token confined to p1.
    {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
     "code": {"text": "US abdomen"}, "subject": {"reference": "Patient/p1"},
     "result": [{"reference": "Observation/o1"}, {"reference": "Observation/o2"}]},
]


@pytest.fixture
def secure_settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url)


@pytest.fixture
def smart(secure_settings: Settings) -> Iterator[Smart]:
    core = open_core(secure_settings, run_migrations=False)
    app = create_app(secure_settings, core)
    with TestClient(app, base_url="http://sono.test") as http:
        world = Smart(http, core, app.state.auth)
        world.seed(*CLINICAL)
        yield world
    core.close()
