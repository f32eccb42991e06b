"""A small partner-side client: credentials file in, authenticated FHIR calls out.

It is what a partner system does (SMART Backend Services), with the library a partner
would use: authlib's OAuth2 client signs a short client assertion with the partner's
private key (``private_key_jwt``), trades it for an access token, and calls the API with
that token, fetching a new one shortly before it expires.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc.errors import InvalidKeyTypeError
from joserfc.jwk import ECKey, RSAKey

from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib would rather have the httpx2 fork; its fallback to httpx is the one we use.
    warnings.filterwarnings("ignore", "The httpx module is deprecated", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

ASSERTION_LIFETIME = 240  # under the gateway's five-minute limit


def client_assertion(
    client_id: str, token_url: str, private_key_pem: str, kid: str, lifetime: int = ASSERTION_LIFETIME, **overrides: Any
) -> str:
    """A signed JWT client assertion (ES384 for EC keys, RS384 for RSA keys) with a fresh
    ``jti``; ``overrides`` replace claims (tests use them to make bad ones)."""
    key, alg = _signing_key(private_key_pem)
    return private_key_jwt_sign(
        key, client_id, token_url, alg=alg, claims=dict(overrides), header={"kid": kid, "typ": "JWT"}, expires_in=lifetime
    )


def _signing_key(pem: str) -> tuple[ECKey | RSAKey, str]:
    try:
        return ECKey.import_key(pem), "ES384"
    except InvalidKeyTypeError:
        return RSAKey.import_key(pem), "RS384"


class ShortPrivateKeyJWT(PrivateKeyJWT):
    """authlib's ``private_key_jwt`` with what SMART asks of the assertion: a short
    lifetime (authlib's default is an hour), the key's ``kid`` and a new ``jti`` each time."""

    def __init__(self, token_url: str, kid: str) -> None:
        super().__init__(token_url)
        self.kid = kid

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return client_assertion(auth.client_id, token_endpoint, auth.client_secret, self.kid)


class PathwayClient:
    """Calls the gateway as one partner client, fetching tokens as needed."""

    def __init__(self, credentials: dict[str, Any], *, scope: str | None = None, timeout: float = 10.0) -> None:
        self.credentials = credentials
        self.scope = scope
        self.fhir_base = credentials["fhir_base"]
        token_url = credentials["token_url"]
        self.http = OAuth2Client(
            credentials["client_id"],
            credentials["private_key_pem"],
            token_endpoint_auth_method=ShortPrivateKeyJWT(token_url, credentials["kid"]),
            scope=scope,
            token_endpoint=token_url,
            grant_type="client_credentials",
            timeout=timeout,
        )

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "PathwayClient":
        return cls(orjson.loads(Path(path).read_bytes()), **kwargs)

    def token(self) -> str:
        """A current access token (a fresh one when the last is about to expire)."""
        if not self.http.token:
            self.http.fetch_token()
        else:
            self.http.ensure_active_token(self.http.token)
        return str(self.http.token["access_token"])

    def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """Call ``{fhir_base}/{path}`` (or an absolute URL) with the bearer token."""
        url = path if path.startswith("http") else f"{self.fhir_base}/{path.lstrip('/')}".rstrip("/")
        all_headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/fhir+json"}
        if json is not None:
            all_headers["Content-Type"] = "application/fhir+json"
            kwargs["content"] = orjson.dumps(json)
        all_headers.update(headers or {})
        # The bearer header is set here: authlib's token auth reads the whole body first,
        # which breaks streamed uploads (it sends a Content-Length beside chunked encoding).
        return self.http.request(method, url, headers=all_headers, withhold_token=True, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.http.close()
