"""The conformance kit's exchange suite (MHD, PIXm, PDQm) against SonoBridge served by
uvicorn: all pass, and what the suite wrote is gone afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sonobridge.conformance.kit.runner import Options, run
from tests.live import serve


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[str]:
    with serve(db_url, tmp_path, "--no-sample") as (base, _):
        yield base


def test_exchange_suite_against_sonobridge(live: str) -> None:
    results = run(Options(target=f"{live}/fhir", suites=("exchange",), timeout=30))
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    assert len(results) == 10
    for test, (outcome, message) in outcomes.items():
        assert outcome == "pass", (test, message)
    for kind in ("Patient", "List", "DocumentReference"):
        left = httpx.get(f"{live}/fhir/{kind}", params={"_summary": "count"}).json()
        assert left["total"] == 0, kind  # deleted by the teardown


def test_exchange_suite_fails_a_server_that_keeps_a_bad_hash(live: str, monkeypatch) -> None:
    """The suite can fail: a server without the Document Recipient checks would keep the
    document whose hash is wrong (simulated by declaring the right hash as wrong)."""
    from sonobridge.conformance.kit import exchange

    monkeypatch.setattr(exchange, "_sha1", lambda data: exchange.base64.b64encode(
        exchange.hashlib.sha1(data).digest()).decode() if data != b"another document"
        else exchange.base64.b64encode(exchange.hashlib.sha1(exchange.DOCUMENT).digest()
                                       ).decode())
    results = run(Options(target=f"{live}/fhir", suites=("exchange",), timeout=30))
    outcomes = {r.test.id: r.outcome for r in results}
    assert outcomes["exchange-06"] == "fail"
