"""Property-based tests: search results equal a brute-force filter over the same resources.

Each example writes its own resources tagged with a fresh run id, and every query is restricted
to that tag, so examples do not see each other's data.
"""

from __future__ import annotations

import calendar
import unicodedata
import uuid
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fhir.helpers import body, post

PROPERTY = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
TAG = "urn:sonobridge:test-run"


def _write(client, resources: list[dict]) -> str:
    run = uuid.uuid4().hex
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**r, "meta": {"tag": [{"system": TAG, "code": run}]}},
         "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}-{run[:8]}"}}
        for r in resources]}
    for entry in bundle["entry"]:
        entry["resource"]["id"] = entry["request"]["url"].split("/")[1]
    r = post(client, "/fhir", bundle)
    assert r.status_code == 200, r.text
    return run


def _search(client, res_type: str, run: str, name: str, value: str) -> set[str]:
    r = client.get(f"/fhir/{res_type}", params=[("_tag", f"{TAG}|{run}"), (name, value),
                                                 ("_count", "1000")])
    assert r.status_code == 200, r.text
    return {e["resource"]["id"].rsplit("-", 1)[0] for e in body(r).get("entry", [])}


# ------------------------------------------------------------------------------------ token
SYSTEMS = ["urn:a", "urn:b", None]
CODES = st.text(alphabet="xyz1", min_size=1, max_size=2)


@PROPERTY
@given(idents=st.lists(st.lists(st.tuples(st.sampled_from(SYSTEMS), CODES), min_size=0,
                                max_size=2), min_size=1, max_size=6),
       form=st.sampled_from(["code", "system|code", "|code", "system|"]),
       system=st.sampled_from(["urn:a", "urn:b"]), code=CODES)
def test_token(client, idents, form, system, code):
    patients = []
    for i, pairs in enumerate(idents):
        resource = {"resourceType": "Patient", "id": f"p{i}"}
        if pairs:
            resource["identifier"] = [{"value": v, **({"system": s} if s else {})}
                                      for s, v in pairs]
        patients.append(resource)
    run = _write(client, patients)
    query = {"code": code, "system|code": f"{system}|{code}", "|code": f"|{code}",
             "system|": f"{system}|"}[form]

    def match(s: str | None, v: str) -> bool:
        return {"code": v == code, "system|code": s == system and v == code,
                "|code": s is None and v == code, "system|": s == system}[form]

    expected = {f"p{i}" for i, pairs in enumerate(idents) if any(match(s, v) for s, v in pairs)}
    assert _search(client, "Patient", run, "identifier", query) == expected


# ------------------------------------------------------------------------------------ string
NAMES = st.text(alphabet="abAB éÉzZ张伟ü", min_size=1, max_size=5).filter(lambda s: s.strip())


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


@PROPERTY
@given(names=st.lists(NAMES, min_size=1, max_size=6), prefix=NAMES)
def test_string_prefix(client, names, prefix):
    run = _write(client, [{"resourceType": "Patient", "id": f"p{i}",
                           "name": [{"family": n}]} for i, n in enumerate(names)])
    expected = {f"p{i}" for i, n in enumerate(names) if _fold(n).startswith(_fold(prefix))}
    assert _search(client, "Patient", run, "family", prefix) == expected


# -------------------------------------------------------------------------------------- date
DAYS = st.dates(min_value=date(2019, 1, 1), max_value=date(2021, 12, 31))
PRECISION = st.sampled_from(["year", "month", "day"])


def _text(day: date, precision: str) -> str:
    return {"year": f"{day:%Y}", "month": f"{day:%Y-%m}", "day": f"{day:%Y-%m-%d}"}[precision]


def _range(day: date, precision: str) -> tuple[int, int]:
    """[first day, day after last) as ordinal numbers: an independent precision model."""
    if precision == "year":
        return date(day.year, 1, 1).toordinal(), date(day.year + 1, 1, 1).toordinal()
    if precision == "month":
        last = calendar.monthrange(day.year, day.month)[1]
        return date(day.year, day.month, 1).toordinal(), \
            date(day.year, day.month, last).toordinal() + 1
    return day.toordinal(), day.toordinal() + 1


@PROPERTY
@given(values=st.lists(st.tuples(DAYS, PRECISION), min_size=1, max_size=6), query_day=DAYS,
       query_precision=PRECISION,
       prefix=st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]))
def test_date_prefixes(client, values, query_day, query_precision, prefix):
    run = _write(client, [{"resourceType": "Patient", "id": f"p{i}",
                           "birthDate": _text(d, p)} for i, (d, p) in enumerate(values)])
    qlo, qhi = _range(query_day, query_precision)

    def match(lo: int, hi: int) -> bool:
        inside = lo >= qlo and hi <= qhi
        return {"eq": inside, "ne": not inside, "gt": hi > qhi, "lt": lo < qlo,
                "ge": hi > qhi or inside, "le": lo < qlo or inside, "sa": lo >= qhi,
                "eb": hi <= qlo}[prefix]

    expected = {f"p{i}" for i, (d, p) in enumerate(values) if match(*_range(d, p))}
    query = prefix + _text(query_day, query_precision)
    assert _search(client, "Patient", run, "birthdate", query) == expected


# --------------------------------------------------------------------------------- reference
TARGETS = st.tuples(st.sampled_from(["Patient", "Group"]), st.sampled_from(["t1", "t2", "t3"]))


@PROPERTY
@given(refs=st.lists(st.one_of(st.none(), TARGETS), min_size=1, max_size=6), target=TARGETS,
       form=st.sampled_from(["typed", "id", "modifier"]))
def test_reference(client, refs, target, form):
    observations = []
    for i, ref in enumerate(refs):
        resource = {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                    "code": {"text": "x"}}
        if ref:
            resource["subject"] = {"reference": f"{ref[0]}/{ref[1]}"}
        observations.append(resource)
    run = _write(client, observations)
    kind, target_id = target
    if form == "typed":
        name, value = "subject", f"{kind}/{target_id}"
    elif form == "id":
        name, value = "subject", target_id
    else:
        name, value = f"subject:{kind}", target_id
    expected = {f"o{i}" for i, ref in enumerate(refs)
                if ref and ref[1] == target_id and (form == "id" or ref[0] == kind)}
    assert _search(client, "Observation", run, name, value) == expected
