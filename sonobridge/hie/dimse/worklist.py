"""Modality Worklist C-FIND (PS3.4 K.6), answered from the active ServiceRequests.

What the FHIR search can decide is pushed into it: status, the patient (by identifier, or a
name prefix), the accession number, the modality (category) and the scheduled date range
(widened by a day on each side, so that time zones never lose an order). Python then
matches every key exactly as PS3.4 says, on the worklist item each order maps to
(``mappings/worklist.py``): so the search only ever narrows, and the rules live in one place.
Results are paged through to the end: no silent cap.

Keys this server does not match on, given a value, are treated as return keys and every
response says so with status FF01 (K.4.1.1.4: "one or more Optional Keys were not supported").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from sonobridge.core.policy import Caller
from sonobridge.core.services import Core
from sonobridge.hie.dimse import matching
from sonobridge.hie.dimse.find import PENDING, PENDING_UNSUPPORTED_KEYS, FindError
from sonobridge.mappings.worklist import DEFAULT_MODALITY, ItemContext, item

IDENTIFIER_MISMATCH = 0xA900

# Matching keys, by how they are matched. Anything else with a value is not supported.
TOP_KEYS = {
    "PatientName": "pn", "PatientID": "text", "IssuerOfPatientID": "text",
    "PatientBirthDate": "date", "PatientSex": "text", "AccessionNumber": "text",
    "StudyInstanceUID": "uid", "RequestedProcedureID": "text",
    "ReferringPhysicianName": "pn", "RequestedProcedurePriority": "text",
}
STEP_KEYS = {
    "ScheduledStationAETitle": "multi", "ScheduledStationName": "text", "Modality": "text",
    "ScheduledProcedureStepStartDate": "datetime", "ScheduledProcedureStepStartTime": "datetime",
    "ScheduledPerformingPhysicianName": "pn", "ScheduledProcedureStepID": "text",
    "ScheduledProcedureStepStatus": "text",
}
NEVER_MATCHED = {"SpecificCharacterSet", "TimezoneOffsetFromUTC"}


@dataclass
class Query:
    """A worklist identifier, split into what is matched and how it is asked for."""

    identifier: Dataset
    top: dict[str, Any] = field(default_factory=dict)
    step: dict[str, Any] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return PENDING_UNSUPPORTED_KEYS if self.unsupported else PENDING

    def search_params(self) -> list[tuple[str, str]]:
        """The FHIR search (ServiceRequest) that finds every order this query can match."""
        params = [("status", "active")]
        accession = _single(self.top.get("AccessionNumber"))
        if accession and len(accession) < 16:  # items carry the first 16 characters only
            params.append(("identifier", accession))
        modality = _single(self.step.get("Modality"))
        if modality and modality != DEFAULT_MODALITY:  # an order without a category is US
            params.append(("category", modality))
        name = _name_prefix(str(self.top.get("PatientName") or ""))
        if name:
            params.append(("subject:Patient.name", name))
        day = str(self.step.get("ScheduledProcedureStepStartDate") or "")
        if day and day != "*":
            low, high = matching.date_bounds(day)
            if low:
                params.append(("occurrence", f"ge{_shift(low, -1)}"))
            if high:
                params.append(("occurrence", f"le{_shift(high, 1)}"))
        return params

    def matches(self, ds: Dataset) -> bool:
        for keyword, wanted in self.top.items():
            if not _match(TOP_KEYS[keyword], wanted, ds.get(keyword)):
                return False
        if not self.step:
            return True
        actual = ds.ScheduledProcedureStepSequence[0]
        for keyword, wanted in self.step.items():
            if STEP_KEYS[keyword] == "datetime":
                continue
            if not _match(STEP_KEYS[keyword], wanted, actual.get(keyword)):
                return False
        return matching.date_time(
            str(self.step.get("ScheduledProcedureStepStartDate") or ""),
            str(self.step.get("ScheduledProcedureStepStartTime") or ""),
            str(actual.get("ScheduledProcedureStepStartDate") or ""),
            str(actual.get("ScheduledProcedureStepStartTime") or ""))


def parse(identifier: Dataset) -> Query:
    """Split the identifier; a key that cannot be understood is a failure (A900)."""
    query = Query(identifier)
    for element in identifier:
        keyword = element.keyword
        if element.tag.group == 0 or keyword in NEVER_MATCHED:
            continue
        if keyword == "ScheduledProcedureStepSequence":
            steps = element.value or []
            if len(steps) > 1:
                raise FindError("one Scheduled Procedure Step Sequence item is allowed",
                                IDENTIFIER_MISMATCH)
            for inner in steps[0] if steps else []:
                _classify(query, inner, STEP_KEYS, query.step, "ScheduledProcedureStepSequence>")
            continue
        _classify(query, element, TOP_KEYS, query.top, "")
    try:  # reject malformed dates and times now, not halfway through the responses
        for keyword in ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"):
            value = str(query.step.get(keyword) or "")
            if value and value != "*":
                bounds = matching.date_bounds if keyword.endswith("Date") else \
                    matching.time_bounds
                bounds(value)
        birth = str(query.top.get("PatientBirthDate") or "")
        if birth and birth != "*":
            matching.date_bounds(birth)
    except matching.MatchError as exc:
        raise FindError(str(exc), IDENTIFIER_MISMATCH) from None
    return query


def _classify(query: Query, element: DataElement, keys: dict[str, str], into: dict[str, Any],
              prefix: str) -> None:
    value = element.value
    if element.VR == "SQ":
        if any(_has_value(inner) for entry in value or [] for inner in entry):
            query.unsupported.append(prefix + element.keyword)  # sequence matching
        return
    if value is None or value == "":
        return
    if element.keyword in keys:
        into[element.keyword] = value
    else:
        query.unsupported.append(prefix + (element.keyword or str(element.tag)))


def _has_value(element: DataElement) -> bool:
    if element.VR == "SQ":
        return any(_has_value(inner) for entry in element.value or [] for inner in entry)
    return element.value not in (None, "")


def _values(wanted: Any) -> list[str]:
    if isinstance(wanted, MultiValue | list | tuple):
        return [str(v) for v in wanted]
    return [str(wanted)]


def _single(wanted: Any) -> str:
    """The value of a single-value key without wildcards (what a FHIR token can match)."""
    if wanted is None or isinstance(wanted, MultiValue | list | tuple):
        return ""
    text = str(wanted)
    return "" if matching.has_wildcard(text) or "\\" in text else text


def _name_prefix(wanted: str) -> str:
    """The leading literal characters of the first name component: what every name a PN key
    matches starts with (FHIR string search is a case-insensitive prefix match)."""
    head = wanted.split("=", 1)[0].split("^", 1)[0]
    for index, ch in enumerate(head):
        if ch in "*?":
            head = head[:index]
            break
    return head.strip()


def _shift(day: str, days: int) -> str:
    moment = date(int(day[:4]), int(day[4:6]), int(day[6:8])) + timedelta(days=days)
    return moment.isoformat()


def _match(kind: str, wanted: Any, actual: Any) -> bool:
    values = _values(wanted)
    if kind == "uid":
        return matching.uid_list(values, str(actual or ""))
    if kind == "multi":
        present = [str(v) for v in actual] if isinstance(actual, MultiValue | list) else \
            ([str(actual)] if actual else [])
        return any(matching.any_value(v, present) for v in values)
    if kind == "pn":
        return any(matching.person_name(v, str(actual or "")) for v in values)
    if kind == "date":
        return any(matching.date(v, str(actual or "")) for v in values)
    return any(matching.text(v, str(actual or "")) for v in values)


# ---------------------------------------------------------------------------------- search

def worklist(core: Core, caller: Caller, query: Query) -> Iterator[Dataset]:
    """The worklist items matching the query, each trimmed to the keys it asked for."""
    settings = core.settings
    stations = settings.worklist_stations
    for found in core.orders.scheduled(caller, query.search_params(),
                                       _single(query.top.get("PatientID")) or None):
        context = ItemContext(patient=found.patient, performers=found.performers,
                              patient_id_system=settings.dicom_patient_id_system,
                              zone=settings.hl7_time_zone, stations=stations)
        ds = item(found.order, context)
        if query.matches(ds):
            yield trimmed(ds, query.identifier)


# ------------------------------------------------------------------------------ responses

def trimmed(ds: Dataset, query: Dataset) -> Dataset:
    """The keys the query asked for, sequences included: a sequence asked for with an item
    gets each of its items trimmed to that item's keys, asked for empty it comes back whole;
    a key this server has no value for comes back empty."""
    out = _trim_item(ds, query)
    out.SpecificCharacterSet = "ISO_IR 192"
    return out


def _trim_item(entry: Dataset, wanted: Dataset) -> Dataset:
    out = Dataset()
    for element in wanted:
        if element.tag.group == 0 or element.keyword == "SpecificCharacterSet":
            continue
        if element.tag not in entry:
            out.add_new(element.tag, element.VR, Sequence([]) if element.VR == "SQ" else None)
        elif element.VR == "SQ" and entry[element.tag].VR == "SQ" and element.value \
                and len(element.value[0]):
            out.add_new(element.tag, "SQ", Sequence(
                [_trim_item(e, element.value[0]) for e in entry[element.tag].value]))
        else:
            out[element.tag] = entry[element.tag]
    return out
