"""The SonoTeachingCase profile describes what ``$teaching-case`` really writes: the case the
operation answers (and stores) conforms, checked by the guide's validator and by the server's
``$validate`` with the profile; a copy without the PSEUDED label does not."""

from __future__ import annotations

import copy
from typing import Any

from sonobridge.conformance.ig.build import guide
from sonobridge.conformance.ig.validate import check
from tests.core import test_teaching as teaching_tests

FHIR = teaching_tests.FHIR
publish = teaching_tests.publish
study = teaching_tests.study  # the fixture: a stored study with burned-in identity

PROFILE = "http://sonobridge.org/fhir/StructureDefinition/sono-teaching-case"


def test_the_operations_case_conforms(core: Any, client: Any, study: dict[str, Any]
                                      ) -> None:
    response: Any = publish(client, study["uid"])
    assert response.status_code == 201, response.text
    case = response.json()
    profile = next(sd for sd in guide().profiles() if sd["url"] == PROFILE)
    assert check(case, profile) == []
    stored = client.get(f"/fhir/DocumentReference/{case['id']}").json()
    assert check(stored, profile) == []
    answer = client.post("/fhir/DocumentReference/$validate", headers=FHIR, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": stored},
            {"name": "profile", "valueUri": PROFILE}]})
    assert answer.status_code == 200, answer.text
    assert not [i for i in answer.json()["issue"] if i["severity"] in ("error", "fatal")]
    unlabelled = copy.deepcopy(stored)
    unlabelled["meta"].pop("security")
    assert any("sono-teach-1" in text or "PSEUDED" in text
               for text in check(unlabelled, profile)), check(unlabelled, profile)
