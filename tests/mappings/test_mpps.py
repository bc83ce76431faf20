"""``sonobridge.mappings.mpps``: an MPPS N-CREATE or N-SET data set as plain values.

``when`` (DA + TM in the modality's zone -> FHIR dateTime) as a table, and ``procedure_step``
on pydicom Datasets built here: a full N-CREATE, an N-SET with only some attributes, empty
and missing values, repeated studies, series items without a UID.
"""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sonobridge.mappings.mpps import TASK_STATUS, ProcedureStep, procedure_step, when


def dataset(**attrs: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")  # malformed on purpose
@pytest.mark.parametrize("date,time,zone,expected", [
    ("20241201", "143015", "+08:00", "2024-12-01T14:30:15+08:00"),
    ("20241201", "143015.123456", "+08:00", "2024-12-01T14:30:15+08:00"),
    ("20241201", "1430", "-05:00", "2024-12-01T14:30:00-05:00"),
    ("20241201", "14", "Z", "2024-12-01T14:00:00Z"),
    ("20241201", "", "+08:00", "2024-12-01T00:00:00+08:00"),
    ("20241201", None, "+08:00", "2024-12-01T00:00:00+08:00"),
    ("20241201", "14:30", "+08:00", "2024-12-01T00:00:00+08:00"),  # not a TM: midnight
    ("20241201", "1430156789", "+00:00", "2024-12-01T14:30:15+00:00"),
    ("2024120", "143015", "+08:00", None),
    ("", "143015", "+08:00", None),
    (None, "143015", "+08:00", None),
])
def test_when(date, time, zone, expected):
    ds = Dataset()
    if date is not None:
        ds.PerformedProcedureStepStartDate = date
    if time is not None:
        ds.PerformedProcedureStepStartTime = time
    assert when(ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                zone) == expected


def test_procedure_step_from_an_n_create():
    ds = dataset(
        PerformedProcedureStepStatus="IN PROGRESS",
        PerformedProcedureStepDescription="US abdomen",
        PerformedProcedureStepStartDate="20241201", PerformedProcedureStepStartTime="090000",
        PerformedProcedureStepEndDate="", PerformedProcedureStepEndTime="",
        ScheduledStepAttributesSequence=Sequence([
            dataset(AccessionNumber="ACC1", StudyInstanceUID="1.2.3"),
            dataset(AccessionNumber="ACC2", StudyInstanceUID="1.2.3"),  # same study twice
            dataset(AccessionNumber="", StudyInstanceUID="1.2.4"),
        ]),
        PerformedSeriesSequence=Sequence([
            dataset(SeriesInstanceUID="1.2.3.1"),
            dataset(SeriesDescription="no uid"),
            dataset(SeriesInstanceUID="1.2.3.2"),
        ]),
    )
    assert procedure_step("9.8.7", ds, "+08:00") == ProcedureStep(
        uid="9.8.7", status="IN PROGRESS", description="US abdomen",
        accession_numbers=["ACC1", "ACC2"], scheduled_studies=["1.2.3", "1.2.4"],
        performed_series=["1.2.3.1", "1.2.3.2"], start="2024-12-01T09:00:00+08:00", end=None)


def test_procedure_step_from_an_n_set():
    ds = dataset(PerformedProcedureStepStatus="COMPLETED",
                 PerformedProcedureStepEndDate="20241201",
                 PerformedProcedureStepEndTime="093512")
    assert procedure_step("9.8.7", ds, "+01:00") == ProcedureStep(
        uid="9.8.7", status="COMPLETED", description="", accession_numbers=[],
        scheduled_studies=[], performed_series=[], start=None,
        end="2024-12-01T09:35:12+01:00")


def test_procedure_step_from_an_empty_data_set():
    assert procedure_step("1", Dataset(), "+08:00") == ProcedureStep(uid="1")


def test_empty_values_are_empty_strings():
    ds = dataset(PerformedProcedureStepStatus="", PerformedProcedureStepDescription=None,
                 ScheduledStepAttributesSequence=Sequence([dataset(AccessionNumber=None)]))
    step = procedure_step("1", ds, "+08:00")
    assert (step.status, step.description, step.accession_numbers, step.scheduled_studies) == \
        ("", "", [], [])


@pytest.mark.parametrize("status,task", [("IN PROGRESS", "in-progress"),
                                         ("COMPLETED", "completed"),
                                         ("DISCONTINUED", "cancelled")])
def test_task_status(status, task):
    assert TASK_STATUS[status] == task
    assert procedure_step("1", dataset(PerformedProcedureStepStatus=status), "Z").status == \
        status


def test_task_status_has_exactly_the_three_mpps_states():
    assert set(TASK_STATUS) == {"IN PROGRESS", "COMPLETED", "DISCONTINUED"}
