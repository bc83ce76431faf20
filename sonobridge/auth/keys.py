"""Signing keys for access and ID tokens: RSA keys kept as JWKs in the data directory.

``sonobridge keys rotate`` adds a new key and retires the current one; a retired key stays
published in the JWKS (and accepted) until every token it signed has expired.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

ALGORITHM = "RS256"


@dataclass
class SigningKey:
    kid: str
    key: RSAKey
    created: float
    retired: float | None


class KeyStore:
    def __init__(self, folder: Path, token_lifetime: int) -> None:
        self.folder = folder
        self.token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._loaded = 0.0

    def _load(self) -> None:
        keys = []
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.json")):
                data = json.loads(path.read_text("utf-8"))
                keys.append(SigningKey(data["kid"], RSAKey.import_key(data["jwk"]),
                                       data["created"], data.get("retired")))
        self._keys = keys
        self._loaded = time.time()

    def all(self) -> list[SigningKey]:
        with self._lock:
            if not self._keys or time.time() - self._loaded > 30:  # other processes rotate too
                self._load()
            if not any(k.retired is None for k in self._keys):
                self._keys.append(self._create())
            return list(self._keys)

    def _create(self) -> SigningKey:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        kid = time.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})
        signing = SigningKey(kid, key, time.time(), None)
        self._write(signing)
        return signing

    def _write(self, signing: SigningKey) -> None:
        path = self.folder / f"{signing.kid}.json"
        tmp = path.with_suffix(".tmp")
        data = {"kid": signing.kid, "created": signing.created, "retired": signing.retired,
                "jwk": signing.key.as_dict(private=True)}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def current(self) -> SigningKey:
        return next(k for k in reversed(self.all()) if k.retired is None)

    def rotate(self) -> SigningKey:
        with self._lock:
            self._load()
            now = time.time()
            for key in self._keys:
                if key.retired is None:
                    key.retired = now
                    self._write(key)
            # drop keys retired long enough ago that no token they signed is still valid
            for key in list(self._keys):
                if key.retired is not None and now - key.retired > self.token_lifetime + 300:
                    (self.folder / f"{key.kid}.json").unlink(missing_ok=True)
                    self._keys.remove(key)
            fresh = self._create()
            self._keys.append(fresh)
            return fresh

    def key_set(self) -> KeySet:
        now = time.time()
        return KeySet([k.key for k in self.all()
                       if k.retired is None or now - k.retired <= self.token_lifetime + 300])

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.key_set().keys]}
