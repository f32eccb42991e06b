"""A small partner-side client: credentials file in, authenticated FHIR calls out.

It is what a partner system does (SMART Backend Services): sign a short client
assertion with its private key, trade it for an access token, and call the API
with that token until shortly before it expires.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import InvalidKeyTypeError
from joserfc.jwk import ECKey, RSAKey

from gateway.auth.tokens import ASSERTION_TYPE


def client_assertion(
    client_id: str, token_url: str, private_key_pem: str, kid: str, lifetime: int = 240, **overrides: Any
) -> str:
    """A signed JWT client assertion (ES384 for EC keys, RS384 for RSA keys)."""
    key, alg = _signing_key(private_key_pem)
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + lifetime, "iat": now, "jti": secrets.token_urlsafe(16)}
    claims.update(overrides)
    return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def _signing_key(pem: str) -> tuple[ECKey | RSAKey, str]:
    try:
        return ECKey.import_key(pem), "ES384"
    except InvalidKeyTypeError:
        return RSAKey.import_key(pem), "RS384"


class PathwayClient:
    """Calls the gateway as one partner client, fetching tokens as needed."""

    def __init__(self, credentials: dict[str, Any], *, scope: str | None = None, timeout: float = 10.0, http: httpx.Client | None = None) -> None:
        self.credentials = credentials
        self.scope = scope
        self.http = http or httpx.Client(timeout=timeout)
        self._token: str | None = None
        self._expires = 0.0
        self.fhir_base = credentials["fhir_base"]

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "PathwayClient":
        return cls(orjson.loads(Path(path).read_bytes()), **kwargs)

    def token(self) -> str:
        """A current access token (a fresh one when the last is about to expire)."""
        if self._token is None or time.time() > self._expires - 30:
            creds = self.credentials
            form = {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": client_assertion(creds["client_id"], creds["token_url"], creds["private_key_pem"], creds["kid"]),
            }
            if self.scope:
                form["scope"] = self.scope
            response = self.http.post(creds["token_url"], data=form)
            response.raise_for_status()
            answer = response.json()
            self._token, self._expires = answer["access_token"], time.time() + answer["expires_in"]
        return self._token

    def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """Call ``{fhir_base}/{path}`` (or an absolute URL) with the bearer token."""
        url = path if path.startswith("http") else f"{self.fhir_base}/{path.lstrip('/')}".rstrip("/")
        all_headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/fhir+json"}
        if json is not None:
            all_headers["Content-Type"] = "application/fhir+json"
            kwargs["content"] = orjson.dumps(json)
        all_headers.update(headers or {})
        return self.http.request(method, url, headers=all_headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json=json, **kwargs)

    def close(self) -> None:
        self.http.close()
