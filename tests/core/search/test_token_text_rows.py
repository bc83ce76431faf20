"""Token index rows: a ``CodeableConcept.text`` that a coding's display already gives is not a
row of its own (``:text`` matches the display's row); a different text, or a text without
codings, still is. Searched through the REST API on SQLite and PostgreSQL."""

from __future__ import annotations

from sonobridge.core.search.registry import Registry
from tests.fhir.test_search import ids, load

LIVER = {"system": "http://snomed.info/sct", "code": "10200004", "display": "Liver"}


def code_rows(obs):
    return sorted(((r["system"], r["code"], r["text"])
                   for r in Registry().index_rows("Observation", obs)["idx_token"]
                   if r["param"] == "code"), key=repr)


def observation(oid, code):
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": code}


def test_rows():
    same = observation("a", {"coding": [LIVER], "text": "LIVER "})
    assert code_rows(same) == [("http://snomed.info/sct", "10200004", "liver")]
    other = observation("b", {"coding": [LIVER], "text": "肝脏"})
    assert code_rows(other) == sorted([(None, None, "肝脏"),
                                       ("http://snomed.info/sct", "10200004", "liver")],
                                      key=repr)
    alone = observation("c", {"text": "Liver"})
    assert code_rows(alone) == [(None, None, "liver")]
    bare = observation("d", {"coding": [{"system": "http://snomed.info/sct", "code": "1"}],
                             "text": "Liver"})
    assert code_rows(bare) == sorted([(None, None, "liver"),
                                      ("http://snomed.info/sct", "1", None)], key=repr)


def test_text_search_finds_each(client):
    load(client,
         observation("tt1", {"coding": [LIVER], "text": "Liver"}),
         observation("tt2", {"coding": [LIVER], "text": "肝脏"}),
         observation("tt3", {"text": "Liver span"}))
    assert sorted(ids(client, "/fhir/Observation?code:text=liver")) == ["tt1", "tt2", "tt3"]
    assert ids(client, "/fhir/Observation?code:text=肝") == ["tt2"]
    assert sorted(ids(client, "/fhir/Observation?code=http://snomed.info/sct|10200004")) == [
        "tt1", "tt2"]
    assert ids(client, "/fhir/Observation?code:missing=true&_id=tt1,tt2,tt3") == []
    assert sorted(ids(client, "/fhir/Observation?code-value-concept:missing=false"
                              "&_id=tt1,tt2,tt3")) == ["tt1", "tt2", "tt3"]
