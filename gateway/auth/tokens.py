"""OAuth2 client credentials with JWT client assertions (RFC 7523, SMART Backend Services).

A partner signs a short-lived assertion with its private key (RS384 or ES384);
the gateway checks it against the client's registered public keys, spends its
``jti`` once, and answers with an access token it signs itself.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.auth.keys import SigningKey
from gateway.auth.scopes import grantable
from gateway.store.models import ClientRow, UsedAssertionRow

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
CLOCK_SKEW = 30
CLIENT_RECHECK_SECONDS = 1.0
# What a refused caller is told, one text per kind of failure: nothing about which
# check failed, whether a client exists or which key it holds.
CLIENT_NOT_AUTHENTICATED = "client authentication failed"
TOKEN_NOT_VALID = "access token is not valid"
TOKEN_EXPIRED = "access token has expired"
CLIENT_NOT_REGISTERED = "the client behind this token is no longer registered"
_CLIENT = ClientRow.__table__
_CLIENT_ACTIVE = select(_CLIENT.c.active).where(_CLIENT.c.id == bindparam("id"))


class AuthError(Exception):
    """Authentication failed; ``error`` is the OAuth2 error code.

    The message is what the caller is told; ``reason`` (default: the message) is
    what the audit trail records, which may say more.
    """

    def __init__(self, message: str, error: str = "invalid_client", reason: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.reason = reason or message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the client, its organisation, granted scopes and roles."""

    client_id: str
    organization: str  # "system|value"
    scopes: frozenset[str]
    roles: frozenset[str]
    kind: str
    expires: int

    @property
    def org_identifier(self) -> dict[str, str]:
        system, _, value = self.organization.partition("|")
        return {"system": system, "value": value}


def _claims_problem(claims: dict[str, Any], client_id: str, audiences: set[str], max_lifetime: int) -> str | None:
    now = time.time()
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return "assertion iss and sub must both be the client id"
    aud = claims.get("aud")
    aud_values = set(aud) if isinstance(aud, list) else {aud}
    if not aud_values & audiences:
        return f"assertion aud must be the token URL ({sorted(audiences)[0]})"
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        return "assertion has no exp"
    if exp < now - CLOCK_SKEW:
        return "assertion has expired"
    if exp > now + max_lifetime + CLOCK_SKEW:
        return f"assertion exp is more than {max_lifetime} seconds ahead"
    nbf, iat = claims.get("nbf"), claims.get("iat")
    if isinstance(nbf, (int, float)) and nbf > now + CLOCK_SKEW:
        return "assertion is not valid yet (nbf)"
    if isinstance(iat, (int, float)) and iat > now + CLOCK_SKEW:
        return "assertion was issued in the future (iat)"
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        return "assertion has no jti"
    return None


def _unverified_issuer(assertion: str) -> str:
    try:
        payload = assertion.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        return str(orjson.loads(base64.urlsafe_b64decode(padded)).get("iss", ""))
    except (IndexError, ValueError, orjson.JSONDecodeError, AttributeError):
        raise AuthError("client assertion is not a JWT") from None


@cache
def _decoy_keys() -> KeySet:
    """A key no client holds: assertions of unknown clients are checked against it, so
    that they take as long to refuse as those of known ones."""
    return KeySet([ECKey.generate_key("P-384")])


def _not_authenticated(reason: str) -> AuthError:
    return AuthError(CLIENT_NOT_AUTHENTICATED, reason=reason)


def authenticate_client(
    session: Session,
    *,
    assertion_type: str | None,
    assertion: str | None,
    client_id: str | None,
    audiences: set[str],
    max_lifetime: int,
) -> ClientRow:
    """Check a client assertion and spend its jti; returns the client."""
    if assertion_type != ASSERTION_TYPE or not assertion:
        raise AuthError(f"client_assertion_type must be {ASSERTION_TYPE} with a client_assertion")
    claimed = (client_id or _unverified_issuer(assertion))[:100]
    client = session.get(ClientRow, claimed) if claimed else None
    keys = orjson.loads(client.jwks) if client is not None and client.active else {}
    known = bool(keys.get("keys"))
    try:
        token = jwt.decode(assertion, KeySet.import_key_set(keys) if known else _decoy_keys(), algorithms=ASSERTION_ALGORITHMS)
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        reason = f"client assertion signature not accepted ({exc.__class__.__name__})" if known else f"unknown, disabled or keyless client {claimed!r}"
        raise _not_authenticated(reason) from None
    if client is None or not known:  # the decoy key never verifies anything; refuse all the same
        raise _not_authenticated(f"unknown, disabled or keyless client {claimed!r}")
    claims = dict(token.claims)
    problem = _claims_problem(claims, client.id, audiences, max_lifetime)
    if problem:
        raise AuthError(problem)
    expires = datetime.fromtimestamp(float(claims["exp"]) + CLOCK_SKEW, timezone.utc)
    try:
        with session.begin_nested():
            session.add(UsedAssertionRow(client_id=client.id, jti=claims["jti"][:200], expires=expires))
    except IntegrityError:
        raise AuthError("assertion jti has already been used") from None
    return client


def issue_access_token(
    signing_key: SigningKey, client: ClientRow, requested_scope: str | None, issuer: str, lifetime: int
) -> dict[str, Any]:
    """An access token response for an authenticated client."""
    allowed = client.scopes.split()
    scopes = grantable(allowed, requested_scope.split() if requested_scope else allowed)
    if not scopes:
        raise AuthError("none of the requested scopes is allowed for this client", "invalid_scope")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": client.id,
        "aud": issuer,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(12),
        "scope": " ".join(scopes),
        "org": client.organization,
        "roles": client.roles,
        "kind": client.kind,
    }
    return {
        "access_token": signing_key.sign_jwt(claims),
        "token_type": "bearer",
        "expires_in": lifetime,
        "scope": claims["scope"],
    }


class AccessTokens:
    """Verifies the gateway's own access tokens, remembering recent good ones."""

    def __init__(self, signing_key: SigningKey, issuer: str | None = None, size: int = 4096) -> None:
        """``issuer`` is the token URL tokens must name as issuer and audience; when None
        (no public URL set, so it follows each request) they must name the same one."""
        self.signing_key = signing_key
        self.issuer = issuer
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._size = size

    def verify(self, token: str) -> Principal:
        now = time.time()
        principal = self._cache.get(token)
        if principal is None:
            try:
                claims = self.signing_key.verify_jwt(token)
            except (JoseError, ValueError, KeyError, TypeError):
                raise AuthError(TOKEN_NOT_VALID, "invalid_token") from None
            if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("sub"), str):
                raise AuthError(TOKEN_NOT_VALID, "invalid_token")
            if claims.get("aud") != claims.get("iss") or (self.issuer is not None and claims.get("iss") != self.issuer):
                raise AuthError(TOKEN_NOT_VALID, "invalid_token", reason="access token was not issued here")
            principal = Principal(
                claims["sub"],
                str(claims.get("org", "")),
                frozenset(str(claims.get("scope", "")).split()),
                frozenset(str(claims.get("roles", "")).split()),
                str(claims.get("kind", "system")),
                claims["exp"],
            )
            self._cache[token] = principal
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        if principal.expires < now:
            self._cache.pop(token, None)
            raise AuthError(TOKEN_EXPIRED, "invalid_token")
        return principal


class ClientRegistrations:
    """Whether the client behind a token is still registered and active, asked of the
    database at most once a second per client (so disabling a client takes effect
    within a second on every route, at one indexed read per client per second)."""

    def __init__(self, reading: Callable[[], AbstractContextManager[Session]], interval: float = CLIENT_RECHECK_SECONDS) -> None:
        self.reading, self.interval = reading, interval
        self._checked: dict[str, float] = {}

    def require_active(self, client_id: str) -> None:
        """Refuse (AuthError) when the client was disabled or removed."""
        now = time.monotonic()
        checked = self._checked.get(client_id)
        if checked is not None and now - checked < self.interval:
            return
        with self.reading() as session:
            active = session.connection().execute(_CLIENT_ACTIVE, {"id": client_id}).scalar()
        if not active:
            self._checked.pop(client_id, None)
            raise AuthError(CLIENT_NOT_REGISTERED, "invalid_token")
        self._checked[client_id] = now
