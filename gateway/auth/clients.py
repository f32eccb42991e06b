"""Registering partner clients and making their key pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session

from gateway.auth.scopes import is_valid_scope
from gateway.store.models import ClientRow
from gateway.store.repository import now_utc


@dataclass(frozen=True)
class ClientKey:
    """A freshly made client key pair."""

    kid: str
    private_pem: str
    public_jwk: dict[str, Any]


def new_client_key() -> ClientKey:
    """An EC P-384 key pair for ES384 client assertions."""
    key = ECKey.generate_key("P-384")
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": "ES384", "use": "sig"}
    return ClientKey(kid, key.as_pem(private=True).decode(), public)


def register_client(
    session: Session,
    client_id: str,
    organization: str,
    scopes: list[str],
    *,
    kind: str = "system",
    roles: list[str] = (),  # type: ignore[assignment]
    public_keys: list[dict[str, Any]] = (),  # type: ignore[assignment]
    replace_keys: bool = False,
) -> ClientRow:
    """Create or update a client; new public keys are added (or replace the old ones)."""
    bad = [s for s in scopes if not is_valid_scope(s)]
    if bad:
        raise ValueError(f"client {client_id}: invalid scope(s) {', '.join(bad)}")
    client = session.get(ClientRow, client_id)
    if client is None:
        client = ClientRow(id=client_id, created=now_utc(), jwks='{"keys": []}')
        session.add(client)
    keys = [] if replace_keys else orjson.loads(client.jwks)["keys"]
    known = {k.get("kid") for k in keys}
    keys += [k for k in public_keys if k.get("kid") not in known]
    client.organization = organization
    client.scopes = " ".join(scopes)
    client.kind = kind
    client.roles = " ".join(roles)
    client.jwks = orjson.dumps({"keys": keys}).decode()
    client.active = True
    session.flush()
    return client


def credentials(client: ClientRow, key: ClientKey, base_url: str) -> dict[str, Any]:
    """The credentials file a partner system needs (DESIGN §7, ``pathway demo``)."""
    system, _, value = client.organization.partition("|")
    return {
        "client_id": client.id,
        "organization": {"system": system, "value": value},
        "token_url": f"{base_url}/oauth/token",
        "fhir_base": f"{base_url}/fhir",
        "kid": key.kid,
        "private_key_pem": key.private_pem,
        "scopes": client.scopes,
    }
