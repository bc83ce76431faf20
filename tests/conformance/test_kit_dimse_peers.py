"""The kit's worklist and Storage Commitment tests against SCPs that are not SonoBridge: one that
offers neither (both skip, saying so), and one that sends the commitment report on a new
association to the kit's listener instead of on the requester's own (the test passes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    UltrasoundMultiFrameImageStorage,
    Verification,
)

from sonobridge.conformance.kit.dimse import COMMITMENT_INSTANCE
from sonobridge.conformance.kit.model import PASS, SKIP
from sonobridge.conformance.kit.runner import Options, run
from tests.live import free_port

TRANSFER = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.fixture
def scp(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """A storage SCP on a free port; with ``commit``, Storage Commitment whose report goes on
    a new association to the kit's listener. Yields (scp port, kit's listener port)."""
    commit = request.param
    kit_port = free_port()
    ae = AE(ae_title="FOREIGN")
    ae.add_supported_context(Verification)
    ae.add_supported_context(UltrasoundMultiFrameImageStorage, TRANSFER)
    if commit:
        ae.add_supported_context(StorageCommitmentPushModel)

    def report(info: Dataset) -> None:
        sender = AE(ae_title="FOREIGN")
        sender.add_requested_context(StorageCommitmentPushModel)
        assoc = sender.associate("127.0.0.1", kit_port, ae_title="SBKIT")
        if assoc.is_established:
            assoc.send_n_event_report(info, 1, StorageCommitmentPushModel,
                                      COMMITMENT_INSTANCE)
            assoc.release()

    def on_action(event: Any) -> tuple[int, None]:
        asked = event.action_information
        info = Dataset()
        info.TransactionUID = asked.TransactionUID
        info.ReferencedSOPSequence = asked.ReferencedSOPSequence
        threading.Thread(target=report, args=(info,), daemon=True).start()
        return 0x0000, None

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: 0x0000), (evt.EVT_N_ACTION, on_action)])
    yield server.server_address[1], kit_port
    server.shutdown()


def _run(port: int, kit_port: int) -> dict[str, tuple[str, str, list[str]]]:
    results = run(Options(suites=("dimse",), dicom=f"FOREIGN@127.0.0.1:{port}", timeout=5,
                          move_port=kit_port))
    return {r.test.id: (r.outcome, r.message, [e.summary for e in r.evidence])
            for r in results}


@pytest.mark.parametrize("scp", [False], indirect=True)
def test_worklist_and_commitment_skip_when_not_offered(scp):
    got = _run(*scp)
    assert got["dimse-store-01"][0] == PASS
    assert got["dimse-mwl-01"][0] == SKIP and "--mllp" in got["dimse-mwl-01"][1]
    assert got["dimse-mwl-02"][0] == SKIP and "Worklist" in got["dimse-mwl-02"][1]
    assert got["dimse-commit-01"][0] == SKIP and "Storage Commitment" in got["dimse-commit-01"][1]


@pytest.mark.parametrize("scp", [True], indirect=True)
def test_a_report_on_a_new_association_is_accepted(scp):
    outcome, message, evidence = _run(*scp)["dimse-commit-01"]
    assert outcome == PASS, message
    assert "N-EVENT-REPORT event 1 on the new association" in evidence
