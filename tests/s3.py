"""A real S3 API server for the tests: moto in server mode, on a free port, one per session.

``moto_server`` yields its endpoint; ``new_bucket`` makes a fresh bucket (each test its own, so
tests do not see each other's objects). Credentials are moto's dummies, passed the standard way
(AWS_* variables), as an operator would for MinIO or Ceph RGW.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.live import free_port

os.environ.setdefault("AWS_ACCESS_KEY_ID", "sonobridge-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sonobridge-test-secret")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the moto S3 server did not start") from None
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def make_bucket(endpoint: str) -> str:
    """A new bucket (S3's CreateBucket is a PUT on the bucket's path)."""
    name = f"sono-{uuid.uuid4().hex[:12]}"
    r = httpx.put(f"{endpoint}/{name}")
    assert r.status_code == 200, r.text
    return name


@pytest.fixture
def s3_url(moto_server: str) -> str:
    """A blob URL in a fresh bucket, with a prefix (as a shared bucket would be used)."""
    return f"s3://{make_bucket(moto_server)}/sonobridge?endpoint={moto_server}&region=us-east-1"
