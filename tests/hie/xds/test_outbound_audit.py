"""The Document Source's submissions in the audit trail (Export, DCM 110106, per try, the
transaction ITI-41 in urn:ihe:event-type-code); a try that waits for the PDF sends nothing and
is not one."""

from __future__ import annotations

import pytest

from sonobridge.hie.xds.outbound import XdsSender
from tests.core.test_documents import _final, _seed
from tests.hie.xds.test_audit import _events, _xds
from tests.hie.xds.test_outbound import _pdf
from tests.hie.xds.zeep_peer import repository

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def peer(tmp_path):
    with repository(tmp_path) as repo:
        yield repo


@pytest.fixture
def settings(settings, peer):
    return settings.replace(xds_repository_url=peer.url, audit=True)


def test_submission_to_the_platform_audited(client, core, peer):
    _seed(client)
    _final(client)
    _pdf(core)
    peer.answers = ["failure"]
    XdsSender(core).send_due()
    assert len(peer.received) == 1
    sent = _xds(_events(client, core), "ITI-41")
    assert len(sent) == 1 and sent[0]["type"]["code"] == "110106"  # Export
    assert sent[0]["type"]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
    assert sent[0]["subtype"] == [{"system": "urn:ihe:event-type-code", "code": "ITI-41",
                                   "display": "Provide and Register Document Set-b"}]
    assert sent[0]["action"] == "C"
    assert sent[0]["outcome"] == "4" and "XDSUnknownPatientId" in str(sent[0])
    assert any((o.get("what") or {}).get("reference") == "Patient/pt1"
               for o in sent[0].get("entity", [])), sent[0]


def test_waiting_for_the_pdf_is_no_submission(client, core, peer):
    _seed(client)
    _final(client)  # the PDF is not rendered: the first try waits for it
    XdsSender(core).send_due()
    assert peer.received == []
    assert _xds(_events(client, core), "ITI-41") == []
