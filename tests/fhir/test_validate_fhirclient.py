"""The Python ``fhirclient`` (SMART on FHIR's client) against a real server process: a
resource claiming the consultation profile is created when it conforms and refused with 422
when it does not; ``$validate`` answers it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sonobridge.conformance.ig.content import examples
from tests.live import serve


def _request() -> dict[str, Any]:
    res = copy.deepcopy(next(e for e in examples() if e["id"] == "example-consultation-request"))
    del res["id"]
    return res


def test_fhirclient_posts_a_profiled_request(tmp_path: Path) -> None:
    from fhirclient import client
    from fhirclient.models.operationoutcome import OperationOutcome
    from fhirclient.models.servicerequest import ServiceRequest
    from requests import HTTPError

    with serve(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, "--no-sample") as (base, _):
        smart = client.FHIRClient(settings={"app_id": "test", "api_base": f"{base}/fhir"})
        server = smart.server
        created = ServiceRequest(_request()).create(server)
        assert created["resourceType"] == "ServiceRequest" and created["id"]
        stored = ServiceRequest.read(created["id"], server)
        assert stored.meta.profile == _request()["meta"]["profile"]
        assert stored.extension[0].valueCoding.code == "written"

        broken = _request()
        del broken["identifier"]
        with pytest.raises(HTTPError) as refused:
            ServiceRequest(broken).create(server)
        assert refused.value.response.status_code == 422
        outcome = OperationOutcome(refused.value.response.json())
        assert outcome.issue[0].expression == ["ServiceRequest.identifier"]

        answer = server.post_json("ServiceRequest/$validate", broken, nosign=True)
        outcome = OperationOutcome(answer.json())
        assert answer.status_code == 200
        assert [(i.severity, i.expression) for i in outcome.issue] == [
            ("error", ["ServiceRequest.identifier"])]
