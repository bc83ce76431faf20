"""Pending C-FIND responses written with a cached command set, one PDU each: the peer reads the
same responses as pynetdicom's own path writes, and a small maximum PDU falls back to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from tests.hie.dimse.test_dimse import STUDY_JPEG, STUDY_NATIVE, pacs  # noqa: F401 (the fixture)
from tests.live import needs_dcmtk

pytestmark = needs_dcmtk


def _query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyDate = "19000101-20991231"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances"):
        setattr(ds, keyword, "")
    return ds


def _find(port: int, max_pdu: int) -> tuple[list[tuple[int, Dataset | None]], list[int]]:
    """(status, identifier) per response, and the number of PDVs in each P-DATA-TF received."""
    pdvs: list[int] = []

    def received(event: evt.Event) -> None:
        if type(event.pdu).__name__ == "P_DATA_TF":
            pdvs.append(len(event.pdu.presentation_data_value_items))

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="SONOBRIDGE", max_pdu=max_pdu,
                         evt_handlers=[(evt.EVT_PDU_RECV, received)])
    assert assoc.is_established
    try:
        answers = [(int(status.Status), ds) for status, ds in assoc.send_c_find(_query(), FIND)]
    finally:
        assoc.release()
    return answers, pdvs


@pytest.fixture
def answers(pacs) -> Iterator[dict[int, tuple]]:  # noqa: F811
    yield {size: _find(pacs.port, size) for size in (0, 16384, 128)}


def test_each_pending_response_is_one_pdu_with_both_pdvs(answers):
    responses, pdvs = answers[16384]
    pending = [ds for status, ds in responses if status == 0xFF00]
    assert len(pending) >= 3 and responses[-1][0] == 0x0000
    assert pdvs[:len(pending)] == [2] * len(pending)  # command and identifier together
    assert pdvs[len(pending):] == [1]  # the final response: pynetdicom's own path


def test_the_responses_read_the_same_whatever_the_path(answers):
    def content(responses: list) -> list[tuple]:
        return sorted((str(ds.StudyInstanceUID), str(ds.PatientName), str(ds.PatientID),
                       ds.ModalitiesInStudy, int(ds.NumberOfStudyRelatedInstances),
                       ds.QueryRetrieveLevel, ds.RetrieveAETitle)
                      for status, ds in responses if status == 0xFF00)

    fast, fallback = content(answers[16384][0]), content(answers[128][0])
    assert fast == fallback == content(answers[0][0])
    assert {STUDY_JPEG, STUDY_NATIVE} <= {row[0] for row in fast}


def test_a_peer_with_a_small_pdu_gets_responses_split_as_pynetdicom_does(answers):
    responses, pdvs = answers[128]  # identifier + command would not fit one 128-byte PDU
    pending = [ds for status, ds in responses if status == 0xFF00]
    assert len(pending) >= 3
    assert max(pdvs) == 1 and len(pdvs) >= 2 * len(pending)
