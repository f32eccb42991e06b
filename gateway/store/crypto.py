"""Encryption at rest: AES-256-GCM with named, rotatable keys.

The keyring lives in the secrets directory (never in the repository or the
database). Each ciphertext records the id of the key that sealed it, and is
bound to its row by associated data, so a ciphertext moved to another row
does not decrypt. Rows with a key id column keep the id there
(:meth:`Keyring.encrypt`); others carry it in front of the ciphertext
(:meth:`Keyring.seal`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

NONCE_BYTES = 12
# Separates the key id from the ciphertext in a sealed value; key ids never contain it.
_KEY_ID_END = b":"
SESSION_KEY = "pathway_keyring"


class KeyringMissing(RuntimeError):
    """A session was made without the keyring (see ``gateway.store.db.session_factory``)."""


@dataclass
class Keyring:
    """Data keys by id, the active one, and the key for blind search indexes."""

    keys: dict[str, bytes]
    active: str
    index_key: bytes
    # One cipher object per key, made on first use: building one per call costs
    # more than sealing a small resource.
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The keyed hash set up once; each value hashes a copy (1.1 instead of 1.4 us a token).
    _blinder: hmac.HMAC | None = field(default=None, init=False, repr=False, compare=False)

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            key = self.keys.get(key_id)
            if key is None:
                raise KeyError(f"data key {key_id!r} is not in the keyring")
            cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes]:
        """Seal under the active key; returns (key id, nonce + ciphertext)."""
        nonce = os.urandom(NONCE_BYTES)
        return self.active, nonce + self._cipher(self.active).encrypt(nonce, plaintext, associated)

    def decrypt(self, key_id: str, sealed: bytes, associated: bytes) -> bytes:
        """Open what :meth:`encrypt` sealed; raises InvalidTag when it was altered or moved."""
        return self._cipher(key_id).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Seal under the active key into one value: key id, ``:``, nonce + ciphertext."""
        key_id, sealed = self.encrypt(plaintext, associated)
        return key_id.encode() + _KEY_ID_END + sealed

    def open(self, value: bytes, associated: bytes) -> bytes:
        """Open what :meth:`seal` made."""
        key_id, _, sealed = value.partition(_KEY_ID_END)
        return self.decrypt(key_id.decode(), sealed, associated)

    def sealed_with(self, value: bytes) -> str:
        """The id of the key a :meth:`seal` value was sealed with."""
        return value.partition(_KEY_ID_END)[0].decode()

    def blind(self, value: str) -> str:
        """A keyed hash of a searchable value, stable across data-key rotation."""
        if self._blinder is None:
            self._blinder = hmac.new(self.index_key, digestmod=hashlib.sha256)
        keyed = self._blinder.copy()
        keyed.update(value.encode())
        return keyed.hexdigest()[:40]

    def rotated(self) -> "Keyring":
        """A keyring with a fresh active key; old keys stay to decrypt old rows."""
        key_id = f"k{len(self.keys) + 1}-{secrets.token_hex(3)}"
        return Keyring({**self.keys, key_id: AESGCM.generate_key(256)}, key_id, self.index_key)


SEALED_TEXT = "sealed:"  # marks free text sealed into a text column: "sealed:{key id}:{base64}"


def seal_text(keyring: Keyring, text: str, associated: str) -> str:
    """Free text about a person, sealed for a text column (bound to ``associated``)."""
    key_id, sealed = keyring.encrypt(text.encode(), associated.encode())
    return f"{SEALED_TEXT}{key_id}:{base64.b64encode(sealed).decode()}"


def open_text(keyring: Keyring, stored: str | None, associated: str) -> str | None:
    """The text :func:`seal_text` sealed; text stored before sealing is returned as it is."""
    if stored is None or not stored.startswith(SEALED_TEXT):
        return stored
    key_id, _, data = stored.removeprefix(SEALED_TEXT).partition(":")
    return keyring.decrypt(key_id, base64.b64decode(data), associated.encode()).decode()


def keyring_of(session: Session) -> Keyring:
    """The keyring the session's factory was given."""
    keyring = session.info.get(SESSION_KEY)
    if keyring is None:
        raise KeyringMissing("this session has no keyring: make sessions with gateway.store.db.session_factory(engine, keyring)")
    return keyring


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
    doc = {
        "active": keyring.active,
        "keys": {kid: base64.b64encode(k).decode() for kid, k in keyring.keys.items()},
        "index_key": base64.b64encode(keyring.index_key).decode(),
    }
    tmp = _path(secrets_dir).with_suffix(".tmp")
    write_owner_only(tmp, orjson.dumps(doc))
    tmp.replace(_path(secrets_dir))


def write_owner_only(path: Path, content: bytes) -> None:
    """Write a secret to a new file that only its owner can read, in a directory only
    its owner can enter; the mode is set when the file is made, before anything is in it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)  # O_EXCL: never reuse a file whose mode someone else chose
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
