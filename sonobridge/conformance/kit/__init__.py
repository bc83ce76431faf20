"""The conformance test kit: suites of tests a platform runs against its own integration or
against SonoBridge (``sonobridge conformance run``). The kit is a client: it speaks HTTP
(httpx), DIMSE (pynetdicom) and MLLP to the server it is pointed at and knows nothing of
SonoBridge's insides, so it runs against any server that speaks the standards."""

from sonobridge.conformance.kit.runner import ALL_SUITES, Options, exit_status, run

__all__ = ["ALL_SUITES", "Options", "exit_status", "run"]
