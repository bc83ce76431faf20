"""The kit against a server that misbehaves: answers too late, answers HTML, closes the
connection, rejects the association, closes MLLP connections. Every test ends failed (or
skipped after a failure) with the reason; the kit itself never crashes and the run goes on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from sonobridge.conformance.kit.model import ERROR, FAIL, PASS, SKIP
from sonobridge.conformance.kit.runner import Options, exit_status, run


class Broken(BaseHTTPRequestHandler):
    """/html/…: 200 with an HTML page; /slow/…: answers after 2 s; /close/…: hangs up;
    /empty/…: 200 with JSON that is not what was asked."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        mode = self.path.split("/")[1]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if mode == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "slow":
            time.sleep(2)
        body, ctype = ((b"<html><body>Service temporarily unavailable</body></html>",
                        "text/html") if mode != "empty" else (b"{}", "application/json"))
        try:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def hangs_up() -> Iterator[int]:
    """A TCP listener that accepts and closes at once (an MLLP or DICOM port gone wrong)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def loop() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    sock.close()


def _check_all_reasoned(results):
    assert results, "the run produced results"
    for r in results:
        assert r.outcome in (FAIL, ERROR, SKIP), (r.test.id, r.outcome)
        assert r.message, f"{r.test.id} has no reason"
    assert exit_status(results) == 1


def test_html_instead_of_json(http_base):
    results = run(Options(target=f"{http_base}/html/fhir", suites=("fhir", "smart", "dicomweb"),
                          timeout=3))
    _check_all_reasoned(results)
    by_id = {r.test.id: r for r in results}
    assert "is not JSON (HTTP 200, text/html" in by_id["fhir-cap-01"].message
    assert "Service temporarily unavailable" in by_id["fhir-cap-01"].message
    assert by_id["fhir-cap-01"].evidence[0].status == "200"
    assert by_id["fhir-cap-02"].outcome == SKIP  # nothing to check without a statement
    assert "not JSON" in by_id["smart-disc-01"].message
    assert "not JSON" in by_id["dicomweb-stow-01"].message
    assert by_id["dicomweb-qido-01"].outcome == SKIP
    assert "dicomweb-stow-01, which failed" in by_id["dicomweb-qido-01"].message
    # tests that need no stored instance still run, and fail on their own terms
    assert by_id["dicomweb-qido-09"].outcome == FAIL
    assert by_id["dicomweb-err-01"].message.endswith("HTTP 200, expected 404")


def test_timeouts(http_base):
    started = time.monotonic()
    results = run(Options(dicomweb=f"{http_base}/slow/dicomweb", suites=("dicomweb",),
                          timeout=0.3))
    _check_all_reasoned(results)
    stow = next(r for r in results if r.test.id == "dicomweb-stow-01")
    assert "no answer within the timeout (ReadTimeout)" in stow.message
    assert stow.evidence and stow.evidence[0].status.startswith("timeout")
    assert time.monotonic() - started < 15


def test_connection_closed(http_base):
    results = run(Options(target=f"{http_base}/close/fhir", suites=("fhir",), timeout=3))
    _check_all_reasoned(results)
    cap = results[0]
    assert cap.test.id == "fhir-cap-01" and cap.outcome == FAIL
    assert "RemoteProtocolError" in cap.message or "ReadError" in cap.message, cap.message


def test_json_that_is_not_what_was_asked(http_base):
    results = run(Options(target=f"{http_base}/empty/fhir", suites=("fhir",), timeout=3))
    _check_all_reasoned(results)
    assert results[0].message == "GET [base]/metadata returns a CapabilityStatement"


def test_association_rejected_and_mllp_hung_up(hangs_up):
    scp = AE(ae_title="PICKY")
    scp.add_supported_context(Verification)
    scp.require_calling_aet = ["SOMEONE_ELSE"]
    server = scp.start_server(("127.0.0.1", 0), block=False)
    port = server.server_address[1]
    try:
        results = run(Options(suites=("dimse", "hl7"), dicom=f"PICKY@127.0.0.1:{port}",
                              mllp=f"127.0.0.1:{hangs_up}", timeout=3))
    finally:
        server.shutdown()
    _check_all_reasoned(results)
    by_id = {r.test.id: r for r in results}
    assert by_id["dimse-echo-01"].message.startswith("association rejected: A-ASSOCIATE SBKIT")
    assert by_id["dimse-store-01"].outcome == FAIL
    assert by_id["dimse-find-01"].outcome == SKIP  # nothing was stored
    assert by_id["hl7-mllp-01"].message.endswith("connection closed without an answer") or \
        "ConnectionResetError" in by_id["hl7-mllp-01"].message
    assert all(r.outcome != PASS for r in results)


def test_nobody_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = run(Options(suites=("dimse", "hl7", "dicomweb"), dicom=f"X@127.0.0.1:{port}",
                          mllp=f"127.0.0.1:{port}", dicomweb=f"http://127.0.0.1:{port}/dw",
                          timeout=2))
    _check_all_reasoned(results)
    by_id = {r.test.id: r for r in results}
    assert "ConnectError" in by_id["dicomweb-stow-01"].message
    assert "ConnectionRefusedError" in by_id["hl7-mllp-01"].message
    assert by_id["dimse-echo-01"].message.startswith("association aborted (refused")


def test_missing_peers_skip_with_the_reason():
    results = run(Options(suites=("dimse", "hl7", "fhir")))
    assert [(r.test.id, r.outcome, r.message) for r in results] == [
        ("dimse-setup", SKIP, "no DIMSE peer: give --dicom AET@host:port"),
        ("hl7-setup", SKIP, "no MLLP listener: give --mllp host:port"),
        ("fhir-setup", SKIP, "no FHIR server: give --target FHIR_BASE_URL")]
    assert exit_status(results) == 0
