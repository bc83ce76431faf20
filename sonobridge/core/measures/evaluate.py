"""``$evaluate-measure``: a Measure over a period → a MeasureReport (summary or subject-list),
stratified.

The Measure is checked first (scoring proportion or ratio, every population's criteria a
known view filter, one indicator per group, stratifiers among organization, practitioner,
device): a Measure naming an unknown expression is refused with 422 and the element's path.
The period must be closed and in order (400 otherwise). The records come from the views run
for the caller, so a caller counts only what it may read.

Scores: proportion = numerator / (denominator - denominator-exclusion), the numerator counted
among the denominator's non-excluded records; ratio (US-HR-01) = numerator / denominator, the
denominator being distinct practitioners x months of the period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sonobridge.core.errors import CoreError
from sonobridge.core.measures.definitions import FILTER_LANGUAGE, STRATA
from sonobridge.core.measures.indicators import FILTERS, PRODUCERS, Data, Period, Record
from sonobridge.core.search.dates import parse_period

POPULATION_CODES = ("initial-population", "numerator", "numerator-exclusion", "denominator",
                    "denominator-exclusion", "denominator-exception")
MAX_PERIOD_DAYS = 5 * 366  # the longest period one evaluation reads
SUBJECT_TYPES = {"Patient": None, "Practitioner": "practitioner",
                 "Organization": "organization", "Device": "device"}


@dataclass
class Population:
    code: str
    expression: str
    path: str


@dataclass
class Group:
    producer: str
    populations: list[Population]
    strata: list[str]


@dataclass
class Checked:
    url: str
    scoring: str
    groups: list[Group]


def _code(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding", []):
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    text = concept.get("text")
    return text if isinstance(text, str) else None


def check_measure(measure: dict[str, Any]) -> Checked:
    """The Measure as this server can evaluate it, or 422 naming what it cannot."""
    scoring = _code(measure.get("scoring"))
    if scoring not in ("proportion", "ratio"):
        raise CoreError(422, "not-supported", f"scoring {scoring!r}: this server evaluates "
                        "proportion and ratio measures", expression=["Measure.scoring"])
    groups = []
    raw_groups = measure.get("group")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise CoreError(422, "required", "the Measure has no group", expression=["Measure.group"])
    for g, group in enumerate(raw_groups):
        populations = []
        producers = set()
        for p, population in enumerate(group.get("population", [])):
            path = f"Measure.group[{g}].population[{p}]"
            code = _code(population.get("code"))
            if code not in POPULATION_CODES:
                raise CoreError(422, "invalid", f"population code {code!r} is not a "
                                "measure-population code", expression=[f"{path}.code"])
            criteria = population.get("criteria") or {}
            language = criteria.get("language")
            expression = criteria.get("expression")
            if language != FILTER_LANGUAGE:
                raise CoreError(422, "not-supported", f"criteria language {language!r}: "
                                f"populations here are {FILTER_LANGUAGE} (a shipped view and "
                                "a named filter)", expression=[f"{path}.criteria.language"])
            if expression not in FILTERS:
                raise CoreError(422, "not-supported", f"unknown population expression "
                                f"{expression!r} (known: {', '.join(sorted(FILTERS))})",
                                expression=[f"{path}.criteria.expression"])
            producers.add(str(expression).split(".")[0])
            populations.append(Population(str(code), str(expression), path))
        if len(producers) != 1:
            raise CoreError(422, "not-supported", "a group's populations must come from one "
                            f"indicator (found {sorted(producers) or 'none'})",
                            expression=[f"Measure.group[{g}].population"])
        codes = {pop.code for pop in populations}
        needed = {"numerator", "denominator"}
        if not needed <= codes:
            raise CoreError(422, "required", f"group {g} needs a numerator and a denominator",
                            expression=[f"Measure.group[{g}].population"])
        strata = []
        for s, stratifier in enumerate(group.get("stratifier", [])):
            name = (stratifier.get("criteria") or {}).get("expression") or \
                _code(stratifier.get("code"))
            if name not in STRATA:
                raise CoreError(422, "not-supported", f"unknown stratifier {name!r} "
                                f"(known: {', '.join(STRATA)})",
                                expression=[f"Measure.group[{g}].stratifier[{s}].criteria"])
            strata.append(str(name))
        groups.append(Group(producers.pop(), populations, strata))
    url = measure.get("url") or f"Measure/{measure.get('id')}"
    return Checked(str(url), str(scoring), groups)


def _bound(value: Any, name: str, zone: str, end: bool) -> int:
    """A period bound in microseconds: a date (or partial date) without a time is read in
    the site's zone; periodEnd covers the whole of the day/month/year it names."""
    if not isinstance(value, str) or not value:
        raise CoreError(400, "required", f"$evaluate-measure needs {name} (the period must "
                        "be closed)", expression=[name])
    text = value.strip()
    start, stop = parse_period(text, name)
    if "T" not in text:
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 1_000_000
        start, stop = start - offset, stop - offset
    return stop if end else start


def period_of(start: Any, end: Any, zone: str = "+00:00") -> Period:
    lo = _bound(start, "periodStart", zone, end=False)
    hi = _bound(end, "periodEnd", zone, end=True)
    if hi <= lo:
        raise CoreError(400, "invalid", f"the period is inverted: periodEnd {end} is before "
                        f"periodStart {start}", expression=["periodEnd"])
    if hi - lo > MAX_PERIOD_DAYS * 86_400_000_000:
        raise CoreError(413, "too-costly", f"a period of at most {MAX_PERIOD_DAYS} days is "
                        "evaluated at once (one request's work is bounded); evaluate year by "
                        "year", expression=["periodEnd"])
    return Period(lo, hi)


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat().replace("+00:00", "Z")


def _counts(group: Group, scoring: str, records: list[Record], months: int
            ) -> tuple[dict[str, list[str]], dict[str, int], Decimal | None]:
    by_code: dict[str, list[str]] = {}
    for pop in group.populations:
        by_code[pop.code] = [r.subject for r in records if pop.expression in r.flags]
    den_expr = next(p.expression for p in group.populations if p.code == "denominator")
    num_expr = next(p.expression for p in group.populations if p.code == "numerator")
    excl = {p.expression for p in group.populations if p.code == "denominator-exclusion"}
    counts = {code: len(subjects) for code, subjects in by_code.items()}
    if scoring == "ratio":
        if den_expr.endswith("doctor-months"):
            doctors = sorted({r.strata.get("practitioner") or "unknown" for r in records
                              if den_expr in r.flags})
            by_code["denominator"] = [f"Practitioner/{d}" for d in doctors]
            counts["denominator"] = len(doctors) * months
        numerator, denominator = counts["numerator"], counts["denominator"]
    else:
        kept = [r for r in records if den_expr in r.flags and not (excl & r.flags)]
        by_code["numerator"] = [r.subject for r in kept if num_expr in r.flags]
        counts["numerator"] = len(by_code["numerator"])
        numerator, denominator = counts["numerator"], len(kept)
    score = None
    if denominator:
        places = Decimal("0.0001")
        score = (Decimal(numerator) / Decimal(denominator)).quantize(places, ROUND_HALF_EVEN)
    return by_code, counts, score


def _population_json(code: str, count: int, subjects: list[str] | None,
                     contained: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {"code": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/measure-population", "code": code}]},
        "count": count}
    if subjects is not None:
        list_id = f"{prefix}{code}"
        contained.append({"resourceType": "List", "id": list_id, "status": "current",
                          "mode": "snapshot",
                          "entry": [{"item": {"reference": s}} for s in subjects]})
        out["subjectResults"] = {"reference": f"#{list_id}"}
    return out


def _filter_subject(records: list[Record], subject: str | None) -> list[Record]:
    if subject is None:
        return records
    res_type, _, res_id = subject.partition("/")
    if res_type not in SUBJECT_TYPES or not res_id:
        raise CoreError(400, "invalid", f"subject {subject!r}: a Patient, Practitioner, "
                        "Organization or Device reference", expression=["subject"])
    dimension = SUBJECT_TYPES[res_type]
    if dimension is None:
        return [r for r in records if r.patient == res_id]
    return [r for r in records if r.strata.get(dimension) == res_id]


def evaluate(measure: dict[str, Any], data: Data, period: Period, *,
             report_type: str = "summary", subject: str | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """The MeasureReport of ``measure`` over ``period`` for the data's caller."""
    checked = check_measure(measure)
    if report_type in ("population", "summary"):
        report_type = "summary"
    elif report_type != "subject-list":
        raise CoreError(400, "invalid", f"reportType {report_type!r}: summary (population) "
                        "or subject-list", expression=["reportType"])
    listing = report_type == "subject-list"
    contained: list[dict[str, Any]] = []
    months = period.months()
    groups_json = []
    for g, group in enumerate(checked.groups):
        records = _filter_subject(PRODUCERS[group.producer](data, period), subject)
        by_code, counts, score = _counts(group, checked.scoring, records, months)
        group_json: dict[str, Any] = {"population": [
            _population_json(code, counts[code], by_code[code] if listing else None,
                             contained, f"g{g}-")
            for code in POPULATION_CODES if code in counts]}
        if score is not None:
            group_json["measureScore"] = {"value": score}
        stratifiers = []
        for name in group.strata:
            values: dict[str, list[Record]] = {}
            for record in records:
                values.setdefault(record.strata.get(name) or "unknown", []).append(record)
            strata = []
            for value in sorted(values):
                _, s_counts, s_score = _counts(group, checked.scoring, values[value], months)
                stratum: dict[str, Any] = {
                    "value": {"text": value if value == "unknown" else
                              f"{name.capitalize()}/{value}"},
                    "population": [
                        {"code": {"coding": [{"system": "http://terminology.hl7.org/"
                                                        "CodeSystem/measure-population",
                                              "code": code}]}, "count": s_counts[code]}
                        for code in POPULATION_CODES if code in s_counts]}
                if s_score is not None:
                    stratum["measureScore"] = {"value": s_score}
                strata.append(stratum)
            stratifiers.append({"code": [{"text": name}], "stratum": strata})
        if stratifiers:
            group_json["stratifier"] = stratifiers
        groups_json.append(group_json)
    report: dict[str, Any] = {
        "resourceType": "MeasureReport", "status": "complete", "type": report_type,
        "measure": checked.url,
        "date": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "period": {"start": _iso(period.start), "end": _iso(period.end - 1)},
        "group": groups_json}
    if "improvementNotation" in measure:
        report["improvementNotation"] = measure["improvementNotation"]
    if subject is not None:
        report["subject"] = {"reference": subject}
    if contained:
        report["contained"] = contained
    return report


def evaluate_all(measures: Iterable[dict[str, Any]], data: Data, period: Period
                 ) -> list[dict[str, Any]]:
    return [evaluate(m, data, period) for m in measures]
