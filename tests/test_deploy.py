"""The deployment files are what docs/deployment.md says: the compose file is well-formed and
complete, the image runs unprivileged with a health check, haproxy accepts its configuration
(checked by haproxy itself), and the systemd unit is hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_compose_file():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "sonobridge", "haproxy"}
    gateway = services["sonobridge"]
    assert gateway["build"] == ".."
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = gateway["environment"]
    assert env["SONOBRIDGE_DATABASE_URL"].startswith("postgresql://")
    assert "${PG_PASSWORD}" in env["SONOBRIDGE_DATABASE_URL"]  # no password in the file
    assert env["SONOBRIDGE_BASE_URL"].startswith("https://")
    assert "healthcheck" in services["postgres"]
    for name, service in services.items():
        image = service.get("image", "")
        assert name == "sonobridge" or re.search(r":\d", image), f"{name}: pin the image"
    assert set(compose["volumes"]) == {"pg-data", "sonobridge-data"}
    # The HTTP port is reached only through haproxy (TLS).
    assert not any(p.startswith("8080") for p in gateway.get("ports", []))


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r'^CMD \["sonobridge", "serve"\]$', text, re.M)
    # Everything the image copies exists (the same install CI makes: pip install .).
    for line in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in line.split():
            assert (ROOT / name).exists(), name


@pytest.mark.skipif(shutil.which("haproxy") is None or shutil.which("openssl") is None,
                    reason="haproxy and openssl (Debian packages) check the proxy configuration")
def test_haproxy_configuration_is_accepted(tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=sono.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    pem = tmp_path / "sonobridge.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    config = (DEPLOY / "haproxy.cfg").read_text()
    assert "/etc/haproxy/tls/sonobridge.pem" in config and "ssl-min-ver TLSv1.2" in config
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config.replace("/etc/haproxy/tls/sonobridge.pem", str(pem))
                   .replace("sonobridge:8080", "127.0.0.1:8080"))
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_unit():
    unit = (DEPLOY / "sonobridge.service").read_text()
    fields = dict(line.split("=", 1) for line in unit.splitlines()
                  if "=" in line and not line.startswith("#"))
    assert fields["User"] == "sonobridge"
    assert fields["ExecStart"].endswith("sonobridge serve")
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "UMask"):
        assert hardening in fields


def test_licence_matches_the_package_metadata():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
