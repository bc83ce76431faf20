"""Search semantics: matching rules, modifiers, chains, includes, sorting, paging, conditionals."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
import pytest

from tests.fhir.helpers import FHIR_JSON, body, outcome_codes, post, put


def ids(client, url: str, **headers: str) -> list[str]:
    r = client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in body(r).get("entry", [])
            if e["search"]["mode"] == "match"]


def bundle(client, url: str, **headers: str) -> dict:
    r = client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return body(r)


def load(client, *resources: dict) -> None:
    for resource in resources:
        r = put(client, f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), r.text


def patient(pid: str, family: str, given: str = "A", **extra) -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": [given]}],
            **extra}


def test_string_matching(client):
    load(client, patient("p1", "Zoë", "Ann"), patient("p2", "zoebel"), patient("p3", "张伟"),
         patient("p4", "Smith", "Zoe"), patient("p5", "\uff21\uff22\uff23"))  # full-width ABC
    assert sorted(ids(client, "/fhir/Patient?family=zoe")) == ["p1", "p2"]
    assert sorted(ids(client, "/fhir/Patient?name=ZOE")) == ["p1", "p2", "p4"]
    assert ids(client, "/fhir/Patient?family=张") == ["p3"]
    assert ids(client, "/fhir/Patient?family=张伟") == ["p3"]
    assert ids(client, "/fhir/Patient?family=伟") == []
    assert ids(client, "/fhir/Patient?family:contains=伟") == ["p3"]
    assert ids(client, "/fhir/Patient?family:exact=Zoë") == ["p1"]
    assert ids(client, "/fhir/Patient?family:exact=zoë") == []
    assert ids(client, "/fhir/Patient?family:contains=bel") == ["p2"]
    assert ids(client, "/fhir/Patient?family=abc") == ["p5"]  # full-width folded


def test_token_matching(client):
    load(client,
         patient("t1", "A", identifier=[{"system": "urn:oid:1.2", "value": "X1"}],
                 gender="male", active=True),
         patient("t2", "B", identifier=[{"value": "X1"}], gender="female", active=False),
         patient("t3", "C", identifier=[{"system": "urn:oid:9", "value": "X2",
                                         "type": {"coding": [{"system": "http://t", "code": "MR"}],
                                                  "text": "Medical record"}}]))
    assert sorted(ids(client, "/fhir/Patient?identifier=X1")) == ["t1", "t2"]
    assert ids(client, "/fhir/Patient?identifier=urn:oid:1.2|X1") == ["t1"]
    assert ids(client, "/fhir/Patient?identifier=|X1") == ["t2"]
    assert ids(client, "/fhir/Patient?identifier=urn:oid:9|") == ["t3"]
    assert ids(client, "/fhir/Patient?identifier:of-type=http://t|MR|X2") == ["t3"]
    assert sorted(ids(client, "/fhir/Patient?gender:not=male")) == ["t2", "t3"]
    assert ids(client, "/fhir/Patient?active=true") == ["t1"]
    assert ids(client, "/fhir/Patient?active=false") == ["t2"]
    load(client, {"resourceType": "Observation", "id": "o1", "status": "final",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "11348-0",
                                       "display": "Liver span"}], "text": "肝脏大小"}})
    assert ids(client, "/fhir/Observation?code:text=liver") == ["o1"]
    assert ids(client, "/fhir/Observation?code:text=肝脏") == ["o1"]


def test_reference_matching(client):
    load(client, patient("r1", "A"),
         {"resourceType": "Observation", "id": "ro1", "status": "final", "code": {"text": "x"},
          "subject": {"reference": "Patient/r1"}},
         {"resourceType": "Observation", "id": "ro2", "status": "final", "code": {"text": "x"},
          "subject": {"reference": "http://sono.test/fhir/Patient/r1"}},
         {"resourceType": "Observation", "id": "ro3", "status": "final", "code": {"text": "x"},
          "subject": {"reference": "http://elsewhere.example/fhir/Patient/r1"}},
         {"resourceType": "Observation", "id": "ro4", "status": "final", "code": {"text": "x"},
          "subject": {"identifier": {"system": "urn:mrn", "value": "M-9"}}},
         {"resourceType": "Observation", "id": "ro5", "status": "final", "code": {"text": "x"},
          "subject": {"reference": "Group/r1"}})
    assert sorted(ids(client, "/fhir/Observation?subject=Patient/r1")) == ["ro1", "ro2"]
    assert sorted(ids(client, "/fhir/Observation?subject=http://sono.test/fhir/Patient/r1")) \
        == ["ro1", "ro2"]
    assert ids(client, "/fhir/Observation?subject=http://elsewhere.example/fhir/Patient/r1") \
        == ["ro3"]
    assert sorted(ids(client, "/fhir/Observation?subject=r1")) == ["ro1", "ro2", "ro3", "ro5"]
    assert sorted(ids(client, "/fhir/Observation?subject:Patient=r1")) == ["ro1", "ro2", "ro3"]
    assert ids(client, "/fhir/Observation?subject:identifier=urn:mrn|M-9") == ["ro4"]
    assert sorted(ids(client, "/fhir/Observation?patient=r1")) == ["ro1", "ro2", "ro3"]


DATES = {"d-year": "2024", "d-month": "2024-03", "d-day": "2024-03-15",
         "d-time": "2024-03-15T10:30:00+08:00", "d-late": "2025-06-01"}


@pytest.mark.parametrize(("query", "expected"), [
    ("2024-03-15", {"d-day", "d-time"}),
    ("eq2024", {"d-year", "d-month", "d-day", "d-time"}),
    ("2024-03", {"d-month", "d-day", "d-time"}),
    ("ne2024-03-15", {"d-year", "d-month", "d-late"}),
    ("gt2024-03-15", {"d-year", "d-month", "d-late"}),
    ("lt2024-03-15", {"d-year", "d-month"}),
    ("ge2024-03-15", {"d-year", "d-month", "d-day", "d-time", "d-late"}),
    ("le2024-03-15", {"d-year", "d-month", "d-day", "d-time"}),
    ("sa2024-12-31", {"d-late"}),
    ("eb2024-03-01", set()),
    ("eb2025", {"d-year", "d-month", "d-day", "d-time"}),
    ("2024-03-15T02:30:00Z", {"d-time"}),
    ("ap2025-06-01", {"d-late"}),
])
def test_date_prefixes(client, query, expected):
    load(client, *[{"resourceType": "Observation", "id": k, "status": "final",
                    "code": {"text": "x"}, "effectiveDateTime": v} for k, v in DATES.items()])
    assert set(ids(client, f"/fhir/Observation?date={query.replace('+', '%2B')}")) == expected


def test_period_and_last_updated(client):
    load(client, {"resourceType": "Encounter", "id": "e1", "status": "finished",
                  "class": {"code": "VR"},
                  "period": {"start": "2026-01-10T08:00:00Z", "end": "2026-01-12T08:00:00Z"}},
         {"resourceType": "Encounter", "id": "e2", "status": "in-progress",
          "class": {"code": "VR"}, "period": {"start": "2026-02-01T08:00:00Z"}})
    assert ids(client, "/fhir/Encounter?date=2026-01-11") == []  # not contained
    assert sorted(ids(client, "/fhir/Encounter?date=ge2026-01-11")) == ["e1", "e2"]
    assert ids(client, "/fhir/Encounter?date=le2026-01-09") == []
    assert ids(client, "/fhir/Encounter?date=gt2030-01-01") == ["e2"]  # open end
    stamp = body(client.get("/fhir/Encounter/e2"))["meta"]["lastUpdated"]
    assert "e2" in ids(client, f"/fhir/Encounter?_lastUpdated=ge{stamp[:10]}")
    assert ids(client, "/fhir/Encounter?_lastUpdated=lt2000-01-01") == []


def test_number_and_quantity(client):
    values = {"q1": (4.9, "cm"), "q2": (5.0, "cm"), "q3": (5.12, "mm"), "q4": (100, "cm")}
    load(client, *[{"resourceType": "Observation", "id": k, "status": "final",
                    "code": {"text": "x"},
                    "valueQuantity": {"value": v, "unit": u, "system": "http://unitsofmeasure.org",
                                      "code": u}} for k, (v, u) in values.items()])
    assert sorted(ids(client, "/fhir/Observation?value-quantity=gt5")) == ["q3", "q4"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=ge5")) == ["q2", "q3", "q4"]
    # "5" means [4.5, 5.5): the precision of the search value (FHIR number search)
    assert sorted(ids(client, "/fhir/Observation?value-quantity=5")) == ["q1", "q2", "q3"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=5.0")) == ["q2"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=5.1")) == ["q3"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=lt5")) == ["q1"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=gt4|http://unitsofmeasure.org|cm")
                  ) == ["q1", "q2", "q4"]
    assert ids(client, "/fhir/Observation?value-quantity=5.12||mm") == ["q3"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=ap100")) == ["q4"]
    assert sorted(ids(client, "/fhir/Observation?value-quantity=ne5")) == ["q4"]
    # Sorting walks the value index, which holds the plain rows only (not the composites')
    assert ids(client, "/fhir/Observation?_sort=value-quantity") == ["q1", "q2", "q3", "q4"]
    assert ids(client, "/fhir/Observation?_sort=-value-quantity&_count=2") == ["q4", "q3"]
    assert ids(client, "/fhir/Observation?value-quantity=gt4&_sort=-value-quantity"
               ) == ["q4", "q3", "q2", "q1"]


def test_uri_above_below(client):
    load(client, {"resourceType": "ValueSet", "id": "v1", "status": "active",
                  "url": "http://example.org/fhir/ValueSet/us/abdomen"},
         {"resourceType": "ValueSet", "id": "v2", "status": "active",
          "url": "http://example.org/fhir/ValueSet/us"})
    assert ids(client, "/fhir/ValueSet?url=http://example.org/fhir/ValueSet/us") == ["v2"]
    assert sorted(ids(client, "/fhir/ValueSet?url:below=http://example.org/fhir/ValueSet/us")
                  ) == ["v1", "v2"]
    assert sorted(ids(client, "/fhir/ValueSet?url:above="
                      "http://example.org/fhir/ValueSet/us/abdomen/liver")) == ["v1", "v2"]


def test_composite(client):
    load(client, *[{"resourceType": "Observation", "id": f"bp{i}", "status": "final",
                    "code": {"text": "bp"}, "component": [
                        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                         "valueQuantity": {"value": sys_}},
                        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                         "valueQuantity": {"value": dia}}]}
                   for i, (sys_, dia) in enumerate([(120, 80), (150, 95), (90, 130)])])
    q = "/fhir/Observation?component-code-value-quantity=http://loinc.org|8480-6$gt130"
    assert ids(client, q) == ["bp1"]
    # the values must come from the same component: 8462-4 (diastolic) above 100 is only bp2
    q = "/fhir/Observation?component-code-value-quantity=http://loinc.org|8462-4$gt100"
    assert ids(client, q) == ["bp2"]


def test_composite_code_value_date(client):
    """R4's code-value-date casts value.as(DateTime): an Observation's valueDateTime (a FHIR
    dateTime) is its second component; it was never indexed, so the search found nothing."""
    load(client, *[{"resourceType": "Observation", "id": f"lmp{i}", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8665-2"}]},
                    "valueDateTime": when} for i, when in enumerate(
                        ["2026-03-01", "2026-05-20T08:00:00+08:00"])],
         {"resourceType": "Observation", "id": "other", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "11778-8"}]},
          "valueDateTime": "2026-06-01"})
    q = "/fhir/Observation?code-value-date=http://loinc.org|8665-2$ge2026-04-01"
    assert ids(client, q) == ["lmp1"]
    q = "/fhir/Observation?code-value-date=http://loinc.org|8665-2$lt2026-12-31"
    assert sorted(ids(client, q)) == ["lmp0", "lmp1"]
    assert ids(client, "/fhir/Observation?code-value-date=http://loinc.org|11778-8$2026-06-01"
               ) == ["other"]


def test_composite_missing_is_answered_for_followers_too(client):
    """:missing on a composite asks whether its first component is there. The composites
    that share code-value-concept's first component keep only complete groups, so their
    :missing is read from the leader's rows: the answers are those of the definition."""
    bp = {"resourceType": "Observation", "id": "bpm", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
          "component": [{"code": {"coding": [{"system": "http://loinc.org",
                                              "code": "8867-4"}]},
                         "valueCodeableConcept": {"text": "regular"}}]}
    plain = {"resourceType": "Observation", "id": "plain", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "11820-8"}]},
             "valueQuantity": {"value": 4, "system": "http://unitsofmeasure.org", "code": "mm"}}
    load(client, bp, plain)
    for name in ("code-value-date", "code-value-quantity", "code-value-string",
                 "code-value-concept"):
        assert sorted(ids(client, f"/fhir/Observation?{name}:missing=false")) == \
            ["bpm", "plain"], name
        assert ids(client, f"/fhir/Observation?{name}:missing=true") == [], name
    for name in ("component-code-value-quantity", "component-code-value-concept"):
        assert ids(client, f"/fhir/Observation?{name}:missing=false") == ["bpm"], name
        assert ids(client, f"/fhir/Observation?{name}:missing=true") == ["plain"], name
    # and the follower still matches its complete groups only
    q = "/fhir/Observation?code-value-quantity=http://loinc.org|11820-8$4"
    assert ids(client, q) == ["plain"]
    assert ids(client, "/fhir/Observation?component-code-value-quantity="
                       "http://loinc.org|8867-4$gt0") == []


def test_or_and_missing(client):
    load(client, patient("m1", "Li", gender="male"), patient("m2", "Wang", gender="female"),
         patient("m3", "Li", gender="female"), {"resourceType": "Patient", "id": "m4"})
    assert sorted(ids(client, "/fhir/Patient?gender=male,female")) == ["m1", "m2", "m3"]
    assert ids(client, "/fhir/Patient?family=li&gender=female") == ["m3"]
    assert ids(client, "/fhir/Patient?gender:missing=true") == ["m4"]
    assert sorted(ids(client, "/fhir/Patient?family:missing=false")) == ["m1", "m2", "m3"]
    escaped = patient("m5", "a,b")
    load(client, escaped)
    assert ids(client, "/fhir/Patient?family:exact=a\\,b") == ["m5"]


def _chain_data(client):
    load(client,
         {"resourceType": "Practitioner", "id": "dr-li", "name": [{"family": "Li"}]},
         {"resourceType": "Practitioner", "id": "dr-wu", "name": [{"family": "Wu"}]},
         patient("cp1", "Zhao", identifier=[{"system": "urn:id", "value": "110"}]),
         patient("cp2", "Qian", identifier=[{"system": "urn:id", "value": "220"}]),
         {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/cp1"},
          "requester": {"reference": "Practitioner/dr-li"}},
         {"resourceType": "ServiceRequest", "id": "sr2", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/cp2"},
          "requester": {"reference": "Practitioner/dr-wu"}},
         {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
          "code": {"text": "US"}, "subject": {"reference": "Patient/cp1"},
          "basedOn": [{"reference": "ServiceRequest/sr1"}],
          "result": [{"reference": "Observation/ob1"}]},
         {"resourceType": "DiagnosticReport", "id": "dr2", "status": "final",
          "code": {"text": "US"}, "subject": {"reference": "Patient/cp2"},
          "basedOn": [{"reference": "ServiceRequest/sr2"}]},
         {"resourceType": "Observation", "id": "ob1", "status": "final",
          "code": {"coding": [{"code": "liver"}]}, "subject": {"reference": "Patient/cp1"},
          "derivedFrom": [{"reference": "Observation/ob2"}]},
         {"resourceType": "Observation", "id": "ob2", "status": "final",
          "code": {"coding": [{"code": "kidney"}]}, "subject": {"reference": "Patient/cp1"},
          "derivedFrom": [{"reference": "Observation/ob1"}]})


def test_chaining(client):
    _chain_data(client)
    assert ids(client, "/fhir/DiagnosticReport?subject:Patient.identifier=urn:id|110") == ["dr1"]
    assert ids(client, "/fhir/DiagnosticReport?subject.family=qian") == ["dr2"]
    assert ids(client, "/fhir/DiagnosticReport?based-on:ServiceRequest.requester:Practitioner"
                       ".name=wu") == ["dr2"]
    assert ids(client, "/fhir/DiagnosticReport?based-on.requester.name=li") == ["dr1"]
    assert ids(client, "/fhir/DiagnosticReport?based-on.requester.name=nobody") == []


def test_reverse_chaining(client):
    _chain_data(client)
    assert ids(client, "/fhir/Patient?_has:Observation:patient:code=kidney") == ["cp1"]
    assert ids(client, "/fhir/Patient?_has:DiagnosticReport:subject:based-on.requester.name=wu"
               ) == ["cp2"]
    nested = "/fhir/Practitioner?_has:ServiceRequest:requester:_has:DiagnosticReport:based-on:" \
             "subject.family=zhao"
    assert ids(client, nested) == ["dr-li"]


def test_include_revinclude_iterate(client):
    _chain_data(client)
    b = bundle(client, "/fhir/DiagnosticReport?_id=dr1&_include=DiagnosticReport:subject"
                       "&_include=DiagnosticReport:result")
    modes = {(e["resource"]["id"], e["search"]["mode"]) for e in b["entry"]}
    assert modes == {("dr1", "match"), ("cp1", "include"), ("ob1", "include")}
    b = bundle(client, "/fhir/Patient?_id=cp1&_revinclude=DiagnosticReport:subject")
    assert {e["resource"]["id"] for e in b["entry"]} == {"cp1", "dr1"}
    b = bundle(client, "/fhir/DiagnosticReport?_id=dr1&_include=DiagnosticReport:based-on"
                       "&_include:iterate=ServiceRequest:requester")
    assert {e["resource"]["id"] for e in b["entry"]} == {"dr1", "sr1", "dr-li"}
    # a cycle (ob1 <-> ob2) terminates and includes each resource once
    b = bundle(client, "/fhir/Observation?_id=ob1&_include:iterate=Observation:derived-from")
    assert [e["resource"]["id"] for e in b["entry"]] == ["ob1", "ob2"]
    b = bundle(client, "/fhir/DiagnosticReport?_id=dr1&_include=*")
    assert {e["resource"]["id"] for e in b["entry"]} == {"dr1", "cp1", "sr1", "ob1"}
    r = client.get("/fhir/DiagnosticReport?_id=dr1&_include=DiagnosticReport:status")
    assert r.status_code == 400


def test_include_limit_is_reported(client, core):
    load(client, patient("big", "X"))
    for i in range(6):
        load(client, {"resourceType": "Observation", "id": f"bo{i}", "status": "final",
                      "code": {"text": "x"}, "subject": {"reference": "Patient/big"}})
    core.search.max_includes = 4
    b = bundle(client, "/fhir/Patient?_id=big&_revinclude=Observation:subject")
    included = [e for e in b["entry"] if e["search"]["mode"] == "include"]
    outcome = [e for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert len(included) == 4 and len(outcome) == 1
    assert "2 more included resources were left out" in \
        outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_include_uses_a_bounded_number_of_statements(client):
    load(client, patient("ip", "X"))
    for count in (5, 40):
        for i in range(count):
            load(client, {"resourceType": "Observation", "id": f"io{count}-{i}",
                          "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Patient/ip"},
                          "performer": [{"reference": f"Practitioner/pr{i}"}]})
            load(client, {"resourceType": "Practitioner", "id": f"pr{i}"})
    statements = []
    for count in (5, 40):
        r = client.get(f"/fhir/Observation?subject=Patient/ip&_count={count}"
                       "&_include=Observation:subject&_include=Observation:performer")
        assert len([e for e in body(r)["entry"] if e["search"]["mode"] == "match"]) == count
        statements.append(int(r.headers["x-search-statements"]))
    assert statements[0] == statements[1] <= 5


@pytest.mark.parametrize("selective", [2000, 1], ids=["driven-by-clause", "driven-by-sort"])
def test_sort_and_paging_stay_correct_while_data_changes(client, core, selective):
    core.search.selective = selective
    load(client, *[patient(f"s{i}", f"F{i % 3}", birthDate=f"19{70 + i}-01-01")
                   for i in range(7)])
    assert ids(client, "/fhir/Patient?_sort=-birthdate&_count=3") == ["s6", "s5", "s4"]
    order = ids(client, "/fhir/Patient?_sort=family,-birthdate&_count=10")
    assert order == ["s6", "s3", "s0", "s4", "s1", "s5", "s2"]
    first = bundle(client, "/fhir/Patient?_sort=family,-birthdate&_count=3")
    seen = [e["resource"]["id"] for e in first["entry"]]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    load(client, patient("s-new", "F0", birthDate="2000-01-01"))  # sorts before the cursor
    while next_url:
        parts = urlsplit(next_url)
        page = bundle(client, f"{parts.path}?{parts.query}")
        seen += [e["resource"]["id"] for e in page["entry"] if e["search"]["mode"] == "match"]
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"),
                        None)
        prev = next(link["url"] for link in page["link"] if link["relation"] == "previous")
    assert seen == order  # no duplicate, nothing skipped
    parts = urlsplit(prev)
    back = [e["resource"]["id"] for e in bundle(client, f"{parts.path}?{parts.query}")["entry"]]
    assert back == order[3:6]


@pytest.mark.parametrize("selective", [2000, 1], ids=["driven-by-clause", "driven-by-sort"])
def test_missing_sort_values_come_last_and_page_both_ways(client, core, selective):
    core.search.selective = selective
    load(client, *[patient(f"n{i}", "Fu", **({"birthDate": f"198{i}-01-01"} if i % 2 else {}))
                   for i in range(8)])
    for sort, with_value in (("birthdate", ["n1", "n3", "n5", "n7"]),
                             ("-birthdate", ["n7", "n5", "n3", "n1"])):
        expected = [*with_value, "n0", "n2", "n4", "n6"]
        url = f"/fhir/Patient?family=fu&_sort={sort}&_count=3"
        assert ids(client, f"/fhir/Patient?family=fu&_sort={sort}&_count=20") == expected
        pages, page = [], bundle(client, url)
        while True:
            pages.append([e["resource"]["id"] for e in page["entry"]])
            nxt = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
            if nxt is None:
                break
            parts = urlsplit(nxt)
            page = bundle(client, f"{parts.path}?{parts.query}")
        assert [i for p in pages for i in p] == expected
        back = []
        while True:
            prev = next((lk["url"] for lk in page["link"] if lk["relation"] == "previous"), None)
            if prev is None:
                break
            parts = urlsplit(prev)
            page = bundle(client, f"{parts.path}?{parts.query}")
            back.insert(0, [e["resource"]["id"] for e in page["entry"]])
        assert back == pages[:-1]


def test_total_and_summary(client):
    load(client, *[patient(f"c{i}", "Chen", gender="male", text={
        "status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'})
        for i in range(5)])
    assert "total" not in bundle(client, "/fhir/Patient?family=chen&_count=2")
    b = bundle(client, "/fhir/Patient?family=chen&_count=2&_total=accurate")
    assert b["total"] == 5
    count = bundle(client, "/fhir/Patient?family=chen&_summary=count")
    assert count["total"] == 5 and "entry" not in count
    summary = bundle(client, "/fhir/Patient?_id=c1&_summary=true")["entry"][0]["resource"]
    assert "text" not in summary and summary["name"] and \
        summary["meta"]["tag"][-1]["code"] == "SUBSETTED"
    text = bundle(client, "/fhir/Patient?_id=c1&_summary=text")["entry"][0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = bundle(client, "/fhir/Patient?_id=c1&_summary=data")["entry"][0]["resource"]
    assert "text" not in data and "gender" in data
    elements = bundle(client, "/fhir/Patient?_id=c1&_elements=gender")["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "gender"}


def test_unknown_parameters_lenient_and_strict(client):
    load(client, patient("u1", "Sun"))
    b = bundle(client, "/fhir/Patient?family=sun&colour=blue")
    assert [e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "match"] == ["u1"]
    outcome = next(e for e in b["entry"] if e["search"]["mode"] == "outcome")["resource"]
    assert outcome["issue"][0]["expression"] == ["colour"]
    assert "colour" not in b["link"][0]["url"]
    r = client.get("/fhir/Patient?family=sun&colour=blue", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and body(r)["issue"][0]["expression"] == ["colour"]


def test_post_search_and_system_search(client):
    load(client, patient("ps1", "Zhou"), {"resourceType": "Practitioner", "id": "pp1",
                                           "name": [{"family": "Zhou"}]})
    r = client.post("/fhir/Patient/_search", content=b"family=zhou",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and [e["resource"]["id"] for e in body(r)["entry"]] == ["ps1"]
    r = client.post("/fhir/Patient/_search", content=b"{}", headers=FHIR_JSON)
    assert r.status_code == 415
    found = ids(client, "/fhir?_type=Patient,Practitioner&_id=ps1,pp1")
    assert sorted(found) == ["pp1", "ps1"]
    assert sorted(ids(client, "/fhir?_id=ps1,pp1")) == ["pp1", "ps1"]


def test_compartment_and_everything(client):
    _chain_data(client)
    assert sorted(ids(client, "/fhir/Patient/cp1/Observation")) == ["ob1", "ob2"]
    assert ids(client, "/fhir/Patient/cp1/Observation?code=kidney") == ["ob2"]
    # (without the signed report's PDF and its rendering job, which the server adds: rpdf-…)
    ours = [i for i in ids(client, "/fhir/Patient/cp1/*") if not i.startswith("rpdf-")]
    assert sorted(ours) == ["cp1", "dr1", "ob1", "ob2", "sr1"]
    everything = [i for i in ids(client, "/fhir/Patient/cp1/$everything")
                  if not i.startswith("rpdf-")]
    assert sorted(everything) == ["cp1", "dr1", "ob1", "ob2", "sr1"]
    assert sorted(ids(client, "/fhir/Patient/cp1/$everything?_type=Observation")) == [
        "ob1", "ob2"]
    page = bundle(client, "/fhir/Patient/cp1/$everything?_count=2")
    assert len(page["entry"]) == 2 and any(link["relation"] == "next" for link in page["link"])
    assert ids(client, "/fhir/Patient/cp1/$everything?_since=2999-01-01") == []
    assert client.get("/fhir/Patient/none/$everything").status_code == 404
    assert client.get("/fhir/Patient/cp1/$everything?family=x").status_code == 400


def test_conditional_create(client):
    resource = patient("ignored", "Ma", identifier=[{"system": "urn:id", "value": "c-1"}])
    first = post(client, "/fhir/Patient", resource, **{"If-None-Exist": "identifier=urn:id|c-1"})
    assert first.status_code == 201
    again = post(client, "/fhir/Patient", resource, **{"If-None-Exist": "identifier=urn:id|c-1"})
    assert again.status_code == 200 and body(again)["id"] == body(first)["id"]
    post(client, "/fhir/Patient", resource)
    dup = post(client, "/fhir/Patient", resource, **{"If-None-Exist": "identifier=urn:id|c-1"})
    assert dup.status_code == 412


def test_conditional_update_delete_patch(client):
    base = {"resourceType": "Patient", "identifier": [{"system": "urn:id", "value": "u-1"}]}
    r = client.put("/fhir/Patient?identifier=urn:id|u-1", content=orjson.dumps(base),
                   headers=FHIR_JSON)
    assert r.status_code == 201
    pid = body(r)["id"]
    r = client.put("/fhir/Patient?identifier=urn:id|u-1",
                   content=orjson.dumps({**base, "gender": "male"}), headers=FHIR_JSON)
    assert r.status_code == 200 and body(r)["id"] == pid and r.headers["etag"] == 'W/"2"'
    r = client.patch("/fhir/Patient?identifier=urn:id|u-1",
                     content=orjson.dumps([{"op": "add", "path": "/active", "value": True}]),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and body(r)["active"] is True
    r = client.patch("/fhir/Patient?identifier=urn:id|none", content=b"[]",
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 404
    post(client, "/fhir/Patient", base)
    r = client.put("/fhir/Patient?identifier=urn:id|u-1", content=orjson.dumps(base),
                   headers=FHIR_JSON)
    assert r.status_code == 412
    r = client.delete("/fhir/Patient?identifier=urn:id|u-1")
    assert r.status_code == 200 and "deleted 2" in body(r)["issue"][0]["diagnostics"]
    assert ids(client, "/fhir/Patient?identifier=urn:id|u-1") == []
    assert client.delete("/fhir/Patient").status_code == 400  # no condition
    assert client.delete("/fhir/Patient?colour=red").status_code == 400  # strict


def test_conditional_references_in_transaction(client):
    load(client, patient("cr1", "Xu", identifier=[{"system": "urn:id", "value": "cr"}]))
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "Patient?identifier=urn:id|cr"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:0d6c1c4e-1111-4d4d-8a8a-000000000001",
         "resource": patient("x", "Xu", identifier=[{"system": "urn:id", "value": "cr"}]),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:id|cr"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "y"},
                      "subject": {"reference": "urn:uuid:0d6c1c4e-1111-4d4d-8a8a-000000000001"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = post(client, "/fhir", tx)
    assert r.status_code == 200, r.text
    entries = body(r)["entry"]
    assert entries[0]["resource"]["subject"]["reference"] == "Patient/cr1"
    assert entries[1]["response"]["status"] == "200 OK"  # matched, not created
    assert entries[2]["resource"]["subject"]["reference"] == "Patient/cr1"
    load(client, patient("cr2", "Xu", identifier=[{"system": "urn:id", "value": "cr"}]))
    r = post(client, "/fhir", {"resourceType": "Bundle", "type": "transaction",
                               "entry": tx["entry"][:1]})
    assert r.status_code == 412
    tx["entry"][0]["resource"]["subject"]["reference"] = "Patient?identifier=urn:id|none"
    r = post(client, "/fhir", {"resourceType": "Bundle", "type": "transaction",
                               "entry": tx["entry"][:1]})
    assert r.status_code == 400


TOWNSHIP = "http://example.org/fhir/StructureDefinition/township"


def test_custom_search_parameter_and_reindex(client):
    load(client, patient("cu1", "He", extension=[
        {"url": TOWNSHIP, "valueString": "Qingshui"}]))
    r = client.get("/fhir/Patient?township=qing", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    load(client, {"resourceType": "SearchParameter", "id": "township", "url":
                  "http://example.org/fhir/SearchParameter/township", "name": "township",
                  "status": "active", "description": "Township of residence", "code": "township",
                  "base": ["Patient"], "type": "string",
                  "expression": "Patient.extension('http://example.org/fhir/StructureDefinition/"
                                "township').value"})
    assert ids(client, "/fhir/Patient?township=qing") == []  # written before the parameter
    load(client, patient("cu2", "He", extension=[
        {"url": TOWNSHIP, "valueString": "Qingshui"}]))
    assert ids(client, "/fhir/Patient?township=qing") == ["cu2"]
    assert client.post("/fhir/$reindex").status_code == 200
    assert sorted(ids(client, "/fhir/Patient?township=qing")) == ["cu1", "cu2"]
    metadata = body(client.get("/fhir/metadata"))
    patient_cs = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    assert "township" in {p["name"] for p in patient_cs["searchParam"]}


def test_in_and_not_in_value_sets(client):
    load(client, {"resourceType": "ValueSet", "id": "liver-codes", "status": "active",
                  "url": "http://example.org/fhir/ValueSet/liver",
                  "compose": {"include": [{"system": "http://loinc.org",
                                           "concept": [{"code": "11348-0"}]}]}},
         *[{"resourceType": "Observation", "id": f"vs{i}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}
           for i, code in enumerate(["11348-0", "999-9"])])
    assert ids(client, "/fhir/Observation?code:in=http://example.org/fhir/ValueSet/liver") == [
        "vs0"]
    assert ids(client, "/fhir/Observation?code:in=ValueSet/liver-codes") == ["vs0"]
    assert ids(client, "/fhir/Observation?code:not-in=http://example.org/fhir/ValueSet/liver"
               ) == ["vs1"]
    r = client.get("/fhir/Observation?code:in=http://example.org/fhir/ValueSet/none")
    assert r.status_code == 400


def test_capability_lists_search(client):
    cs = body(client.get("/fhir/metadata"))
    report = next(r for r in cs["rest"][0]["resource"] if r["type"] == "DiagnosticReport")
    names = {p["name"] for p in report["searchParam"]}
    assert {"_id", "_lastUpdated", "code", "subject", "imaging-study", "based-on"} <= names
    assert "DiagnosticReport:result" in report["searchInclude"]
    study = next(r for r in cs["rest"][0]["resource"] if r["type"] == "ImagingStudy")
    assert "DiagnosticReport:imaging-study" in study["searchRevInclude"]
    assert report["conditionalCreate"] is True and report["conditionalDelete"] == "multiple"
    assert {"code": "search-type"} in report["interaction"]


@pytest.mark.parametrize("url", [
    "/fhir/Patient?birthdate=1990-13-45",
    "/fhir/Patient?birthdate=gtyesterday",
    "/fhir/Observation?value-quantity=gtfive",
    "/fhir/Patient?family:fuzzy=x",
    "/fhir/Patient?gender:above=male",
    "/fhir/Patient?gender.name=x",
    "/fhir/Patient?_sort=colour",
    "/fhir/Patient?_count=100000",
    "/fhir/Patient?_count=-1",
    "/fhir/Patient?_total=maybe",
    "/fhir/Patient?_summary=perhaps",
    "/fhir/Patient?_include=Patient:colour",
    "/fhir/Patient?_has:Observation:colour:code=x",
    "/fhir/Patient?_has:Observation",
    "/fhir/Patient?family:missing=maybe",
    "/fhir/Patient?_page=not-a-page",
    "/fhir/Observation?subject:Spaceship.name=x",
    "/fhir/Observation?value-quantity=5|http://unitsofmeasure.org",
    "/fhir/Observation?component-code-value-quantity=http://loinc.org|8480-6",
])
def test_bad_search_requests(client, url):
    r = client.get(url)
    assert r.status_code == 400, (url, r.status_code, r.text)
    assert outcome_codes(r)[0] in ("invalid", "not-supported", "value")


def test_page_link_of_another_search_is_refused(client):
    load(client, *[patient(f"pl{i}", "Lin") for i in range(3)])
    page = bundle(client, "/fhir/Patient?family=lin&_count=1")
    cursor = next(link["url"] for link in page["link"] if link["relation"] == "next")
    token = cursor.split("_page=")[1]
    r = client.get(f"/fhir/Patient?family=wang&_count=1&_page={token}")
    assert r.status_code == 400 and "different search" in body(r)["issue"][0]["diagnostics"]


def test_identifier_matches_pairs_whole_and_in_order(client, core):
    """The bridges' identifier lookup: each (system, value) pair matched as a whole (system A
    with B's value is no match), current resources only, ids in the order of the pairs."""
    for res_id, system, value in (("a", "urn:a", "1"), ("b", "urn:b", "2"),
                                  ("c", "urn:a", "2"), ("gone", "urn:b", "9")):
        r = put(client, f"/fhir/Patient/{res_id}", {
            "resourceType": "Patient", "id": res_id,
            "identifier": [{"system": system, "value": value}]})
        assert r.status_code == 201, r.text
    assert client.delete("/fhir/Patient/gone").status_code in (200, 204)
    pairs = [("urn:b", "2"), ("urn:a", "1"), ("urn:b", "1"), ("urn:b", "9"), ("urn:a", "2")]
    with core.store.reader.connect() as conn:
        matched = core.search.identifier_matches(conn, "Patient", pairs)
        ordered = core.search.by_identifier(conn, "Patient", pairs)
        many = core.search.identifier_matches(
            conn, "Patient", [("urn:x", str(n)) for n in range(20)] + [("urn:a", "2")])
    assert matched == {("urn:b", "2"): ["b"], ("urn:a", "1"): ["a"], ("urn:a", "2"): ["c"]}
    assert ordered == ["b", "a", "c"]
    assert many == {("urn:a", "2"): ["c"]}  # more pairs than one statement takes
