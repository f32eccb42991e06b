"""Encryption at rest: AES-256-GCM with named, rotatable keys.

The keyring lives in the secrets directory (never in the repository or the
database). Each ciphertext records the id of the key that sealed it, and is
bound to its row by associated data, so a ciphertext moved to another row
does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


@dataclass
class Keyring:
    """Data keys by id, the active one, and the key for blind search indexes."""

    keys: dict[str, bytes]
    active: str
    index_key: bytes

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes]:
        """Seal under the active key; returns (key id, nonce + ciphertext)."""
        nonce = os.urandom(NONCE_BYTES)
        return self.active, nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, associated)

    def decrypt(self, key_id: str, sealed: bytes, associated: bytes) -> bytes:
        key = self.keys.get(key_id)
        if key is None:
            raise KeyError(f"data key {key_id!r} is not in the keyring")
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)

    def blind(self, value: str) -> str:
        """A keyed hash of a searchable value, stable across data-key rotation."""
        return hmac.new(self.index_key, value.encode(), hashlib.sha256).hexdigest()[:40]

    def rotated(self) -> "Keyring":
        """A keyring with a fresh active key; old keys stay to decrypt old rows."""
        key_id = f"k{len(self.keys) + 1}-{secrets.token_hex(3)}"
        return Keyring({**self.keys, key_id: AESGCM.generate_key(256)}, key_id, self.index_key)


def _path(secrets_dir: Path) -> Path:
    return secrets_dir / "data-keys.json"


def load_keyring(secrets_dir: Path) -> Keyring:
    """Read the keyring, creating one with a first key when there is none."""
    path = _path(secrets_dir)
    if not path.exists():
        first = Keyring({}, "", secrets.token_bytes(32)).rotated()
        save_keyring(secrets_dir, first)
        return first
    doc = orjson.loads(path.read_bytes())
    return Keyring(
        {kid: base64.b64decode(k) for kid, k in doc["keys"].items()},
        doc["active"],
        base64.b64decode(doc["index_key"]),
    )


def save_keyring(secrets_dir: Path, keyring: Keyring) -> None:
    """Write the keyring readable by its owner only, replacing the old file atomically."""
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {
        "active": keyring.active,
        "keys": {kid: base64.b64encode(k).decode() for kid, k in keyring.keys.items()},
        "index_key": base64.b64encode(keyring.index_key).decode(),
    }
    tmp = _path(secrets_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(doc))
    tmp.replace(_path(secrets_dir))
