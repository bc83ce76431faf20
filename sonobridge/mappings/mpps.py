"""A Modality Performed Procedure Step (N-CREATE attribute list or N-SET modification list)
as plain values: what the core's order workflow needs, without the DICOM data set."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

# PS3.3 C.4.14 Performed Procedure Step Status -> FHIR Task.status
TASK_STATUS = {"IN PROGRESS": "in-progress", "COMPLETED": "completed",
               "DISCONTINUED": "cancelled"}


@dataclass
class ProcedureStep:
    uid: str  # the MPPS SOP Instance UID
    status: str = ""  # IN PROGRESS, COMPLETED, DISCONTINUED ("" when not given)
    description: str = ""
    accession_numbers: list[str] = field(default_factory=list)
    scheduled_studies: list[str] = field(default_factory=list)  # Study Instance UIDs
    performed_series: list[str] = field(default_factory=list)  # Series Instance UIDs
    start: str | None = None  # FHIR dateTime
    end: str | None = None


def when(ds: Dataset, date_key: str, time_key: str, zone: str) -> str | None:
    """A DICOM date and time (in the modality's zone ``zone``, e.g. +08:00) as a FHIR
    dateTime; ``None`` without a full date."""
    date = str(ds.get(date_key, "") or "")
    if len(date) != 8 or not date.isdecimal():
        return None
    clock = str(ds.get(time_key, "") or "").split(".")[0].ljust(6, "0")[:6]
    if not clock.isdecimal():
        clock = "000000"
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{clock[:2]}:{clock[2:4]}:{clock[4:]}{zone}"


def procedure_step(uid: str, ds: Dataset, zone: str) -> ProcedureStep:
    step = ProcedureStep(uid, status=str(ds.get("PerformedProcedureStepStatus", "") or ""),
                         description=str(ds.get("PerformedProcedureStepDescription", "")
                                         or ""))
    for item in ds.get("ScheduledStepAttributesSequence", []):
        accession = str(item.get("AccessionNumber", "") or "")
        study = str(item.get("StudyInstanceUID", "") or "")
        if accession:
            step.accession_numbers.append(accession)
        if study and study not in step.scheduled_studies:
            step.scheduled_studies.append(study)
    step.performed_series = [str(item.SeriesInstanceUID)
                             for item in ds.get("PerformedSeriesSequence", [])
                             if item.get("SeriesInstanceUID")]
    step.start = when(ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                      zone)
    step.end = when(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", zone)
    return step
