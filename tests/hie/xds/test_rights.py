"""XDS under the authorization server: a Bearer token is required on /xds/* and its rights
bound what a peer submits, finds and retrieves, as on /fhir."""

from __future__ import annotations

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import q
from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures
from tests.auth.test_access import token
from tests.hie.xds import helpers as h

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
A, B = "110101199001010011", "110101199001010022"


def _cx(card: str) -> str:
    return f"{card}^^^&{h.AFFINITY}&ISO"


def _post(world, path, content_type, body, tok=None):
    headers = {"Content-Type": content_type}
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    response = world.http.post(path, content=body, headers=headers)
    return response.status_code, soap.read(response.headers["content-type"], response.content)


def _submit(world, card, tok):
    data = f"report of {card}".encode()
    entry = h.entry(data, patient_cx=_cx(card))
    message = h.iti41((entry, data), sset=h.submission_set(_cx(card)))
    status, answer = _post(world, "/xds/repository", message.content_type, message.body, tok)
    return status, answer.body, entry


def _find(world, card, tok):
    content_type, body, _ = soap.write(ITI18, h.find_documents(_cx(card)))
    return _post(world, "/xds/registry", content_type, body, tok)[1].body


def test_token_required_and_rights_bound(smart):  # noqa: F811 - the fixture
    smart.seed({"resourceType": "Patient", "id": "xa", "identifier": [
        {"system": f"urn:oid:{h.AFFINITY}", "value": A}]},
        {"resourceType": "Patient", "id": "xb", "identifier": [
            {"system": f"urn:oid:{h.AFFINITY}", "value": B}]})
    # no token, a bad token: a SOAP Fault with 401
    for tok in (None, "not-a-token"):
        status, body, _ = _submit(smart, A, tok)
        assert status == 401 and body.tag == q("soap", "Fault")
    system = smart.system_token("system/*.cruds")
    for card in (A, B):
        status, body, _ = _submit(smart, card, system)
        assert status == 200 and body.get("status") == ebrim.SUCCESS, body.attrib
    # read-only rights: the submission is refused, nothing stored
    reader = smart.system_token("system/*.rs")
    status, body, _ = _submit(smart, A, reader)
    assert body.get("status") == ebrim.FAILURE
    assert h.errors(body) == ["XDSRepositoryError"]
    assert len(_find(smart, A, system).findall(f".//{q('rim', 'ExtrinsicObject')}")) == 1
    # a token confined to patient xa finds xa's document, not xb's
    confined = token(smart, "patient/*.rs", patient="xa")
    assert len(_find(smart, A, confined).findall(f".//{q('rim', 'ExtrinsicObject')}")) == 1
    assert _find(smart, B, confined).findall(f".//{q('rim', 'ExtrinsicObject')}") == []
    # nor retrieves it: the same answer as for a document that does not exist
    b_entry = ebrim.read_entry(_find(smart, B, system).find(
        f".//{q('rim', 'ExtrinsicObject')}"))
    repository = Peers.of(smart.core.settings).repository_unique_id
    content_type, data, _ = soap.write(ITI43, h.retrieve(repository, b_entry.unique_id))
    _, answer = _post(smart, "/xds/repository", content_type, data, confined)
    assert h.errors(answer.body) == ["XDSDocumentUniqueIdError"]
    _, answer = _post(smart, "/xds/repository", content_type, data, system)
    assert answer.body.find(q("rs", "RegistryResponse")).get("status") == ebrim.SUCCESS
