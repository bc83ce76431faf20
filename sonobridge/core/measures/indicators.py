"""The filters behind the indicators' populations: view rows in, flagged records out.

An indicator's records are the units it counts (a report, a request, a notification, a
review, a device), each with the filters it satisfies (the Measure's ``criteria.expression``
names), the patient it belongs to and its strata (organization, practitioner, device). The
rows come from the shipped views run for the caller (``core/views``), so an indicator counts
only what the caller may read. Times are compared in UTC; a date without a time stands for
its first instant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from sonobridge.core.errors import CoreError
from sonobridge.core.policy import Caller
from sonobridge.core.search.dates import parse_period
from sonobridge.core.views.cache import RowCache
from sonobridge.core.views.definition import View, compile_view
from sonobridge.core.views.service import RunOptions, ViewService
from sonobridge.core.views.shipped import SHIPPED

FINAL = frozenset({"final", "amended", "corrected", "appended"})
HOUR = 3_600_000_000
MINUTE = 60_000_000
DAY = 24 * HOUR
PASS_MARK = Decimal(80)  # report QC: a total score of at least this is qualified
INPATIENT = "IMP"  # v3 ActCode: inpatient encounter
Row = dict[str, Any]
ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
ID_CHUNK = 1000  # ids per lookup when reading referenced resources
# The shipped views' rows by resource content, shared by every evaluation in the process (an
# all-indicator report reads the reports once, the next month's evaluation only what changed).
# 500,000 resources hold a 100,000-study year's reports, studies, requests, reviews,
# notifications and procedures (~410,000): a year's indicators, one request each, read each
# resource once. About 0.5 KB a resource (compact entries, core/views/cache.py; estimated
# from the bench's peak RSS, +150 MB for 300,000 more resources): ~250 MB per process at most.
ROWS = RowCache(500_000)


@dataclass
class Record:
    subject: str  # "DiagnosticReport/r1"
    flags: set[str]
    patient: str | None = None
    strata: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Period:
    start: int  # microseconds since the epoch, UTC, inclusive
    end: int  # exclusive

    def holds(self, instant: int | None) -> bool:
        return instant is not None and self.start <= instant < self.end

    def months(self) -> int:
        """The period in months (at least 1), from its length (30.44-day months), so that a
        calendar month is 1 and a year 12 in whichever zone its bounds were given."""
        return max(1, round((self.end - self.start) / (30.436875 * DAY)))


def instant(value: Any) -> int | None:
    """A FHIR date/dateTime/instant as microseconds (its first instant), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    return _instant(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FULL_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?\Z")


@lru_cache(maxsize=65_536)
def _instant(value: str) -> int | None:
    """Remembered: the indicators of one report read the same report times again (issued
    is compared by four of them). A full dateTime (``2026-11-03T10:00:00+08:00``, the form
    the reports carry) goes through ``datetime.fromisoformat``, in C: a year's evaluation
    reads a few hundred thousand of them, and the search module's general parser took a
    tenth of its time. It gives the same first instant (fractions past microseconds cut, no
    zone read as UTC; and 9999-12-31T23:59:59Z, which that parser refuses for want of an end);
    anything else, or anything it refuses, takes the general parser."""
    if _FULL_DATETIME.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            delta = moment - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    try:
        return parse_period(value, "value", require_tz=False)[0]
    except CoreError:
        return None


class Data:
    """The shipped views' rows for one caller, each view run at most once per evaluation
    (an all-indicator report reads each type once). Rows are narrowed through the search
    index where the period allows (``window``) and looked up by id in chunks where only the
    referenced resources matter (``by_ids``), so a month's evaluation reads the month, not
    the store. The rows of a resource already seen (same content) come from ``ROWS``, so
    the next indicator or evaluation reads only the resources it has not seen."""

    def __init__(self, service: ViewService, caller: Caller, cache: RowCache | None = None
                 ) -> None:
        self.service = service
        self.caller = caller
        self.cache = ROWS if cache is None else cache
        self._rows: dict[tuple[str, tuple[tuple[str, str], ...]], list[Row]] = {}
        self._ids: dict[str, dict[str, Row | None]] = {}

    def rows(self, view_id: str, query: tuple[tuple[str, str], ...] = ()) -> list[Row]:
        key = (view_id, query)
        if key not in self._rows:
            view_key, view = _compiled(view_id)
            self._rows[key] = list(self.service.run_cached(
                self.caller, view, view_key, self.cache, RunOptions(query=query)))
        return self._rows[key]

    def readable(self, res_type: str) -> bool:
        """Whether the caller may read the type at all (a missing right narrows, not fails,
        the joins it would feed)."""
        policy = self.caller.policy
        return policy.unrestricted or bool(policy.grants(res_type, "r"))

    def by_ids(self, view_id: str, res_type: str, ids: Iterable[str | None]
               ) -> dict[str, Row]:
        """The view's rows of these resources (looked up by id, ``ID_CHUNK`` at a time)."""
        wanted = {i for i in ids if isinstance(i, str) and ID.match(i)}
        if not wanted or not self.readable(res_type):
            return {}
        cache = self._ids.setdefault(view_id, {})
        missing = sorted(wanted - set(cache))
        view_key, view = _compiled(view_id)
        for start in range(0, len(missing), ID_CHUNK):
            chunk = missing[start:start + ID_CHUNK]
            for row in self.service.run_cached(
                    self.caller, view, view_key, self.cache, RunOptions(ids=tuple(chunk))):
                cache[row["id"]] = row
            for res_id in chunk:
                cache.setdefault(res_id, None)
        found: dict[str, Row] = {}
        for res_id in wanted:
            hit = cache.get(res_id)
            if hit is not None:
                found[res_id] = hit
        return found


# Views of which the indicators read only some columns: only those are evaluated (a study
# is read for its device alone).
COLUMNS: dict[str, tuple[str, ...]] = {"us-exams": ("id", "device")}


@cache
def _compiled(view_id: str) -> tuple[str, View]:
    """A shipped view compiled once, narrowed to ``COLUMNS``; with the key its rows are
    cached under (which names the columns kept)."""
    body = SHIPPED[view_id]
    keep = COLUMNS.get(view_id)
    if keep is None:
        return view_id, compile_view(body)
    select = [{**body["select"][0], "column": [c for c in body["select"][0]["column"]
                                               if c["name"] in keep]}]
    return f"{view_id}[{','.join(keep)}]", compile_view({**body, "select": select})


def window(param: str, period: Period, after: int = DAY, before: int = DAY
           ) -> tuple[tuple[str, str], ...]:
    """Search parameters for ``param`` within the period, widened by a day on each side (the
    filters decide exactly; the index only has to hold a superset)."""
    def iso(micros: int) -> str:
        return datetime.fromtimestamp(micros // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return ((param, f"ge{iso(period.start - before)}"), (param, f"le{iso(period.end + after)}"))


def since(param: str, period: Period) -> tuple[tuple[str, str], ...]:
    return window(param, period)[:1]


def _report_strata(report: Row | None, exams: dict[str, Row]) -> dict[str, str | None]:
    if report is None:
        return {"organization": None, "practitioner": None, "device": None}
    exam = exams.get(report.get("study") or "")
    return {"organization": report.get("organization"),
            "practitioner": report.get("practitioner"),
            "device": exam.get("device") if exam else None}


def _exams(data: Data, reports: Iterable[Row | None]) -> dict[str, Row]:
    return data.by_ids("us-exams", "ImagingStudy",
                       (r.get("study") for r in reports if r is not None))


def _final_reports(data: Data, period: Period) -> list[Row]:
    return [row for row in data.rows("us-reports", window("issued", period))
            if row.get("status") in FINAL and period.holds(instant(row.get("issued")))]


def reports(data: Data, period: Period, prefix: str) -> list[Record]:
    """US-HR-01 and US-PR-01: final ultrasound reports issued in the period."""
    found = _final_reports(data, period)
    exams = _exams(data, found)
    out = []
    for row in found:
        flags = {f"{prefix}.reports"}
        if prefix == "us-hr-01":
            flags.add("us-hr-01.doctor-months")
        if row.get("positive") is True:
            flags.add(f"{prefix}.positive")
        out.append(Record(f"DiagnosticReport/{row['id']}", flags, row.get("patient"),
                          _report_strata(row, exams)))
    return out


def breast_reports(data: Data, period: Period) -> list[Record]:
    """BI-RADS rate: final breast reports with a lesion issued in the period; counted when
    the conclusion carries a BI-RADS category."""
    found = [row for row in _final_reports(data, period)
             if row.get("breast") is True and row.get("positive") is True]
    exams = _exams(data, found)
    return [Record(f"DiagnosticReport/{row['id']}",
                   {"us-br-01.breast-lesion-reports"} | (
                       {"us-br-01.bi-rads"} if row.get("birads") else set()),
                   row.get("patient"), _report_strata(row, exams)) for row in found]


def interventions(data: Data, period: Period) -> list[Record]:
    """US-IC-01: completed ultrasound-guided procedures performed in the period; complicated
    when a complication is recorded."""
    out = []
    for row in data.rows("us-interventions", window("date", period)):
        when = instant(row.get("performed")) or instant(row.get("performed_start"))
        if row.get("status") != "completed" or not row.get("guided") or \
                not period.holds(when):
            continue
        flags = {"us-ic-01.interventions"}
        if row.get("complication"):
            flags.add("us-ic-01.complicated")
        out.append(Record(f"Procedure/{row['id']}", flags, row.get("patient"),
                          {"organization": row.get("organization"),
                           "practitioner": row.get("practitioner"),
                           "device": row.get("device")}))
    return out


def inpatient_requests(data: Data, period: Period) -> list[Record]:
    """US-TL-01: ultrasound requests of inpatient encounters ordered in the period; reported
    when a final report based on them was issued within 48 h of the order."""
    requests = [row for row in data.rows("us-requests", window("authored", period))
                if row.get("ultrasound") and period.holds(instant(row.get("authored")))]
    encounters = data.by_ids("us-encounters", "Encounter",
                             (row.get("encounter") for row in requests))
    wanted = {row["id"] for row in requests}
    first_report: dict[str, tuple[int, Row]] = {}
    for row in data.rows("us-reports", since("issued", period)):
        when = instant(row.get("issued"))
        request = str(row.get("request") or "")
        if request in wanted and when is not None and row.get("status") in FINAL and \
                (request not in first_report or when < first_report[request][0]):
            first_report[request] = (when, row)
    exams = _exams(data, (found[1] for found in first_report.values()))
    out = []
    for row in requests:
        authored = instant(row.get("authored"))
        encounter = encounters.get(row.get("encounter") or "")
        if encounter is None or encounter.get("class") != INPATIENT or authored is None:
            continue
        flags = {"us-tl-01.inpatient-requests"}
        if row.get("status") in ("revoked", "entered-in-error"):
            flags.add("us-tl-01.withdrawn")
        reported = first_report.get(row["id"])
        if reported is not None and reported[0] - authored <= 48 * HOUR:
            flags.add("us-tl-01.reported-48h")
        strata = _report_strata(reported[1] if reported else None, exams)
        if strata["organization"] is None:
            strata["organization"] = encounter.get("organization")
        out.append(Record(f"ServiceRequest/{row['id']}", flags, row.get("patient"), strata))
    return out


def critical_values(data: Data, period: Period) -> list[Record]:
    """US-CV-01: notifications about reports issued in the period; in time when sent within
    10 minutes of the report's issue."""
    notices = [row for row in data.rows("us-critical-values", since("sent", period))
               if row.get("status") != "entered-in-error" and not row.get("follow_up")]
    by_report = data.by_ids("us-reports", "DiagnosticReport",
                            (row.get("report") for row in notices))
    exams = _exams(data, by_report.values())
    out = []
    for row in notices:
        report = by_report.get(row.get("report") or "")
        issued = instant(report.get("issued")) if report else None
        if report is None or issued is None or not period.holds(issued):
            continue
        flags = {"us-cv-01.critical-values"}
        sent = instant(row.get("sent"))
        if sent is not None and sent - issued <= 10 * MINUTE:
            flags.add("us-cv-01.within-10-min")
        out.append(Record(f"Communication/{row['id']}", flags, row.get("patient"),
                          _report_strata(report, exams)))
    return out


def report_reviews(data: Data, period: Period) -> list[Record]:
    """Report writing qualified rate: completed report QC reviews authored in the period;
    qualified at ``PASS_MARK`` or above."""
    reviews = [row for row in data.rows("us-qc-reviews", window("authored", period))
               if row.get("status") == "completed" and row.get("report")
               and period.holds(instant(row.get("authored")))]
    by_report = data.by_ids("us-reports", "DiagnosticReport",
                            (row.get("report") for row in reviews))
    exams = _exams(data, by_report.values())
    out = []
    for row in reviews:
        flags = {"us-rq-01.reviewed"}
        score = row.get("score")
        if isinstance(score, int | Decimal) and score >= PASS_MARK:
            flags.add("us-rq-01.qualified")
        report = by_report.get(row["report"])
        out.append(Record(f"QuestionnaireResponse/{row['id']}", flags,
                          report.get("patient") if report else None,
                          _report_strata(report, exams)))
    return out


def devices(data: Data, period: Period) -> list[Record]:
    """US-EQ-01: devices in use (active); QC passed when the last QC date is within the year
    before the period end."""
    out = []
    for row in data.rows("us-devices"):
        if row.get("status") != "active":
            continue
        flags = {"us-eq-01.in-use"}
        qc = instant(row.get("qc_date"))
        if qc is not None and period.end - 366 * DAY <= qc < period.end:
            flags.add("us-eq-01.qc-passed")
        out.append(Record(f"Device/{row['id']}", flags, None,
                          {"organization": row.get("organization"), "practitioner": None,
                           "device": row["id"]}))
    return out


Producer = Callable[[Data, Period], list[Record]]
# filter-name prefix -> the records it is drawn from
PRODUCERS: dict[str, Producer] = {
    "us-hr-01": lambda d, p: reports(d, p, "us-hr-01"),
    "us-pr-01": lambda d, p: reports(d, p, "us-pr-01"),
    "us-tl-01": inpatient_requests,
    "us-cv-01": critical_values,
    "us-rq-01": report_reviews,
    "us-eq-01": devices,
    "us-br-01": breast_reports,
    "us-ic-01": interventions,
}
FILTERS = frozenset({
    "us-hr-01.reports", "us-hr-01.doctor-months", "us-pr-01.reports", "us-pr-01.positive",
    "us-tl-01.inpatient-requests", "us-tl-01.withdrawn", "us-tl-01.reported-48h",
    "us-cv-01.critical-values", "us-cv-01.within-10-min", "us-rq-01.reviewed",
    "us-rq-01.qualified", "us-eq-01.in-use", "us-eq-01.qc-passed",
    "us-br-01.breast-lesion-reports", "us-br-01.bi-rads", "us-ic-01.interventions",
    "us-ic-01.complicated"})
