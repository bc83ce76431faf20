"""ITI-41 over mutual TLS (ITI-19 node authentication): the node's certificate opens the
repository's door; a certificate from a CA the repository does not trust does not, and the
submission waits for another try instead of being lost."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from sonobridge.hie.xds.outbound import XdsSender
from tests.core.test_documents import _final, _seed
from tests.hie.xds.test_outbound import _pdf, _tasks
from tests.hie.xds.zeep_peer import repository

pytestmark = [pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The platform's CA (server and node certificates) and a rogue CA with its own node."""
    d = tmp_path_factory.mktemp("xds-pki")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                 f"/CN={ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=d)
    for name, ca in (("server", "ca"), ("node", "ca"), ("rogue", "rogue-ca")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                 f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                 f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
                 "-out", f"{name}.pem", cwd=d)
    return d


@pytest.fixture
def peer(tmp_path, pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED  # node authentication
    with repository(tmp_path, tls=context) as repo:
        yield repo


@pytest.fixture(params=["node", "rogue"])
def settings(settings, peer, pki, request):
    return settings.replace(xds_repository_url=peer.url, tls_ca=str(pki / "ca.pem"),
                            tls_cert=str(pki / f"{request.param}.pem"),
                            tls_key=str(pki / f"{request.param}.key"))


def test_node_certificate(client, core, peer, settings):
    _seed(client)
    _final(client)
    _pdf(core)
    XdsSender(core).send_due()
    task = _tasks(client)[0]
    if settings.tls_cert.endswith("node.pem"):
        assert task["status"] == "completed", task
        assert len(peer.received) == 1
    else:  # refused at the handshake: nothing received, tried again later
        assert task["status"] == "requested", task
        assert task["input"][0]["valueInteger"] == 1
        assert peer.received == []
