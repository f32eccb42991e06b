"""The gateway's own signing key: access tokens, webhook signatures, audit seals.

An EC P-384 key (ES384) kept in the secrets directory; its public half is
published at ``/.well-known/jwks.json``. JOSE work uses joserfc, the authlib
project's JOSE library (authlib.jose is deprecated in its favour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from joserfc.util import urlsafe_b64encode

from gateway.store.crypto import write_owner_only

ALGORITHM = "ES384"
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068: tells our access tokens from anything else we sign


class SigningKey:
    """The gateway's private key with its key id."""

    def __init__(self, pem: bytes) -> None:
        self._key = ECKey.import_key(pem)
        self.kid = self._key.thumbprint()
        self._key.ensure_kid()
        public = self._key.as_dict(private=False)
        self._public = {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}
        self.public_keys = KeySet.import_key_set({"keys": [self._public]})

    def jwks(self) -> dict[str, Any]:
        """The public key set partners verify our signatures with."""
        return {"keys": [self._public]}

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """An access token carrying ``claims``."""
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": ACCESS_TOKEN_TYPE}, claims, self._key, algorithms=[ALGORITHM])

    def verify_jwt(self, token: str) -> dict[str, Any]:
        """Check the signature and type of an access token we issued and return its claims
        (checked by the caller); ValueError when it is some other JWT."""
        decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
        if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise ValueError(f"not an access token (typ {decoded.header.get('typ')!r})")
        return dict(decoded.claims)

    def sign_detached(self, payload: bytes) -> str:
        """A compact JWS over ``payload`` with the payload part left empty (RFC 7515 appendix F)."""
        compact = jws.serialize_compact({"alg": ALGORITHM, "kid": self.kid}, payload, self._key, algorithms=[ALGORITHM])
        head, _, signature = compact.split(".")
        return f"{head}..{signature}"


def verify_detached(signature: str, payload: bytes, jwks: dict[str, Any]) -> bool:
    """Check a detached JWS made by :meth:`SigningKey.sign_detached` with a public key set."""
    head, _, tail = signature.partition("..")
    compact = f"{head}.{urlsafe_b64encode(payload).decode()}.{tail}"
    try:
        jws.deserialize_compact(compact, KeySet.import_key_set(jwks), algorithms=[ALGORITHM])
    except (JoseError, ValueError):
        return False
    return True


def load_signing_key(secrets_dir: Path) -> SigningKey:
    """Read the gateway key, creating it (owner-readable only) on first use."""
    path = secrets_dir / "gateway-signing-key.pem"
    if not path.exists():
        write_owner_only(path, ECKey.generate_key("P-384").as_pem(private=True))
    return SigningKey(path.read_bytes())
