"""TLS on every listener, checked with real peers: `openssl s_client` on HTTPS (TLS 1.2+ only),
dcmtk `storescu +tls` on the DICOM TLS port (mutual TLS: no client certificate, no
association), and MLLP over TLS through `openssl s_client` (the HL7 client has no TLS of its
own), an ACK coming back over the encrypted connection."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.dicom_data import cine, to_bytes
from tests.live import free_port, needs_dcmtk, with_scu_peers

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=SonoBridge test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                 f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{name}.pem",
                 cwd=d)
    return d


@pytest.fixture(scope="module")
def gateway(pki: Path, tmp_path_factory: pytest.TempPathFactory):
    """`sonobridge serve` with HTTPS, DICOM TLS and MLLP over TLS (plain DICOM and MLLP off)."""
    work = tmp_path_factory.mktemp("tls")
    ports = {"http": free_port(), "dicom": free_port(), "mllp": free_port()}
    env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
           "SONOBRIDGE_AUTH": "disabled", "SONOBRIDGE_AUDIT": "off",
           "SONOBRIDGE_DATABASE_URL": "", "SONOBRIDGE_MLLP_PORT": "0",
           "SONOBRIDGE_DICOM_PORT": "0", "SONOBRIDGE_DICOM_TLS_PORT": str(ports["dicom"]),
           "SONOBRIDGE_MLLP_TLS_PORT": str(ports["mllp"]),
           "SONOBRIDGE_TLS_KEY": str(pki / "server.key"), "SONOBRIDGE_TLS_CA": str(pki / "ca.pem"),
           "SONOBRIDGE_DICOM_PEERS": with_scu_peers("")}
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sonobridge", "serve", "--port",
                                 str(ports["http"]), "--tls-cert", str(pki / "server.pem"),
                                 "--no-sample"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{ports['http']}"
    deadline = time.monotonic() + 40
    while True:
        try:
            if httpx.get(f"{base}/healthz", verify=_ca(pki), timeout=1
                         ).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.2)
    yield base, ports, log
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _ca(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca.pem"))


def _s_client(port: int, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          input=stdin, capture_output=True, timeout=30)


def test_https_speaks_tls12_or_later_only(gateway, pki: Path):
    base, ports, _ = gateway
    r = httpx.get(f"{base}/fhir/metadata", verify=_ca(pki))
    assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"
    assert r.json()["implementation"]["url"].startswith("https://")
    ok = _s_client(ports["http"], "-CAfile", str(pki / "ca.pem"), "-brief",
                   stdin=b"GET /healthz HTTP/1.0\r\n\r\n")
    assert b"Verification: OK" in ok.stderr, ok.stderr
    assert b"Protocol version: TLSv1.3" in ok.stderr or b"TLSv1.2" in ok.stderr
    for old in ("-tls1", "-tls1_1"):
        refused = _s_client(ports["http"], old, "-CAfile", str(pki / "ca.pem"))
        assert refused.returncode != 0, old
    # Plain HTTP on the TLS port gets no HTTP answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{ports['http']}/healthz", timeout=3)


@needs_dcmtk
def test_dicom_tls_with_a_client_certificate_and_without(gateway, pki: Path, tmp_path: Path):
    _, ports, _ = gateway
    path = tmp_path / "cine.dcm"
    path.write_bytes(to_bytes(cine("native", frames=2)))
    tls = ["+tls", str(pki / "client.key"), str(pki / "client.pem"), "+cf", str(pki / "ca.pem")]
    ok = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SONOBRIDGE", *tls,
                         "127.0.0.1", str(ports["dicom"]), str(path)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Without a certificate from the CA: the TLS handshake fails, nothing is stored.
    anonymous = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SONOBRIDGE",
                                "+tla", "+cf", str(pki / "ca.pem"), "127.0.0.1",
                                str(ports["dicom"]), str(path)],
                               capture_output=True, text=True, timeout=60)
    assert anonymous.returncode != 0
    # Plain DICOM on the TLS port: no association either.
    plain = subprocess.run(["echoscu", "-to", "5", "127.0.0.1", str(ports["dicom"])],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0


def test_mllp_over_tls(gateway, pki: Path):
    _, ports, _ = gateway
    message = ("MSH|^~\\&|HIS|HOSP|SONO|SONO|20261203101500||ADT^A04^ADT_A01|TLS1|P|2.5\r"
               "PID|1||TLS-MRN^^^HOSP^MR||王^五||19800101|M\r")
    framed = b"\x0b" + message.encode() + b"\x1c\x0d"
    ack = _mllp_through_s_client(ports["mllp"], pki, framed, client_certificate=True)
    assert b"MSA|AA|TLS1" in ack, ack
    refused = _mllp_through_s_client(ports["mllp"], pki, framed, client_certificate=False)
    assert b"MSA|" not in refused


def _mllp_through_s_client(port: int, pki: Path, framed: bytes, *,
                           client_certificate: bool) -> bytes:
    """Send one framed message through `openssl s_client` (as a site wraps an MLLP client
    without TLS) and read until the answer's end block, the connection's end, or 20 s."""
    import selectors

    cert = ["-cert", str(pki / "client.pem"), "-key", str(pki / "client.key")] \
        if client_certificate else []
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                             "-quiet", "-ign_eof", "-CAfile", str(pki / "ca.pem"), *cert],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(framed)
    proc.stdin.flush()
    received = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    try:
        while b"\x1c\x0d" not in received and time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            received += chunk
    finally:
        proc.kill()
        proc.wait()
    return received
