"""The conformance kit's subscriptions suite against SonoBridge served by uvicorn: all pass."""

from __future__ import annotations

from sonobridge.conformance.kit.runner import Options, run
from tests.interop.test_subscriptions_websocket import served  # noqa: F401 - a fixture


def test_subscriptions_suite_against_sonobridge(served):  # noqa: F811
    base, _core = served
    results = run(Options(target=f"{base}/fhir", suites=("subscriptions",), timeout=10))
    outcomes = {r.test.id: (r.outcome, r.message) for r in results}
    for test in ("subs-cap-01", "subs-cap-02", "subs-bad-01", "subs-bad-02", "subs-bad-03",
                 "subs-ws-01"):
        assert outcomes[test][0] == "pass", (test, outcomes[test])
    assert len(results) == 6
