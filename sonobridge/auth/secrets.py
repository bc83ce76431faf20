"""Secrets that must be read back (TOTP seeds), encrypted at rest with a key kept beside the
token signing keys, not in the database: a copy of the database alone gives no second factor.

AES-256-GCM from ``cryptography`` (already here for the JOSE libraries); the stored form is
``enc1:`` + base64(nonce + ciphertext + tag). A value without the prefix is a seed stored before
encryption was introduced: it is still read, and encrypted when next written.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc1:"
KEY_FILE = "secrets.key"


class SecretBox:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def _aead(self) -> AESGCM:
        with self._lock:
            if self._key is None:
                self._key = self._load()
        return AESGCM(self._key)

    def _load(self) -> bytes:
        if self.folder is None:
            raise RuntimeError("no key folder to keep the secrets key in")
        path = self.folder / KEY_FILE
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        data = path.read_bytes()
        if len(data) != 32:
            raise RuntimeError(f"{path} is not a 32-byte key")
        return data

    def seal(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead().encrypt(nonce, plaintext.encode(), b"sonobridge-secret")
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def reveal(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before secrets were sealed
        raw = base64.urlsafe_b64decode(stored[len(PREFIX):])
        return self._aead().decrypt(raw[:12], raw[12:], b"sonobridge-secret").decode()
