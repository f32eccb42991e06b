"""Client authentication with real keys: what gets a token and what is refused."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from gateway.auth.tokens import ASSERTION_TYPE
from gateway.client import client_assertion

from .conftest import FACILITY, HSCP


def _token(server, assertion: str, client_id: str | None = None) -> httpx.Response:  # type: ignore[no-untyped-def]
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
    if client_id:
        form["client_id"] = client_id
    return httpx.post(f"{server.url}/oauth/token", data=form, timeout=10)


def _assertion(client, **overrides) -> str:  # type: ignore[no-untyped-def]
    creds = client.credentials
    return client_assertion(creds["client_id"], creds["token_url"], creds["private_key_pem"], creds["kid"], **overrides)


def _refused(response: httpx.Response, words: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert words in body["issue"][0]["diagnostics"]


def test_valid_assertion_gets_a_short_lived_token_with_scopes(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    response = _token(server, _assertion(client))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["token_type"] == "bearer" and answer["expires_in"] <= 300
    assert set(answer["scope"].split()) == {"system/*.read", "system/*.write"}
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    assert jwks["keys"][0]["alg"] == "ES384"


def test_scope_request_is_narrowed_never_widened(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("facility", FACILITY, ["system/Task.write", "system/*.read"])
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": _assertion(client),
        "scope": "system/Task.write system/Patient.write",
    }
    answer = httpx.post(f"{server.url}/oauth/token", data=form).json()
    assert answer["scope"] == "system/Task.write"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": int(time.time()) + 3600}, "more than 300 seconds"),
        ({"aud": "https://elsewhere.example/oauth/token"}, "aud"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"sub": "someone-else"}, "iss and sub"),
    ],
)
def test_bad_claims_are_refused(server, make_client, overrides, words):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    _refused(_token(server, _assertion(client, **overrides)), words)


def test_replayed_jti_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    assertion = _assertion(client)
    assert _token(server, assertion).status_code == 200
    _refused(_token(server, assertion), "already been used")


def test_unknown_client_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    assertion = client_assertion("nobody", creds["token_url"], creds["private_key_pem"], creds["kid"])
    _refused(_token(server, assertion), "client authentication failed")


def test_assertion_signed_with_another_key_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    victim = make_client("social-work")
    attacker = make_client("attacker", FACILITY)
    creds = victim.credentials
    forged = client_assertion(
        creds["client_id"], creds["token_url"], attacker.credentials["private_key_pem"], creds["kid"]
    )
    _refused(_token(server, forged), "client authentication failed")


def _b64(data: dict) -> str:  # type: ignore[type-arg]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    now = int(time.time())
    claims = {"iss": "social-work", "sub": "social-work", "aud": creds["token_url"], "exp": now + 60, "jti": "n1"}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    _refused(_token(server, unsigned), "client authentication failed")


def test_hs256_forged_with_the_public_key_is_refused(server, make_client, gateway):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    with gateway.sessions() as session:
        from gateway.store.models import ClientRow

        public_jwk = json.loads(session.get(ClientRow, "social-work").jwks)["keys"][0]
    secret = OctKey.import_key(json.dumps(public_jwk).encode())
    now = int(time.time())
    claims = {"iss": "social-work", "sub": "social-work", "aud": creds["token_url"], "exp": now + 60, "jti": "h1"}
    forged = jwt.encode({"alg": "HS256", "kid": creds["kid"]}, claims, secret, algorithms=["HS256"])
    _refused(_token(server, forged), "client authentication failed")


def test_api_refuses_missing_forged_and_foreign_tokens(server, make_client, gateway):  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/fhir/Patient")
    assert response.status_code == 401 and response.json()["resourceType"] == "OperationOutcome"
    response = httpx.get(f"{server.url}/fhir/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    # a token signed by someone else's key, in the gateway's format
    from gateway.auth.keys import SigningKey
    from joserfc.jwk import ECKey

    other = SigningKey(ECKey.generate_key("P-384").as_pem(private=True))
    fake = other.sign_jwt({"sub": "social-work", "org": HSCP, "scope": "system/*.read", "exp": int(time.time()) + 60})
    response = httpx.get(f"{server.url}/fhir/Patient", headers={"Authorization": f"Bearer {fake}"})
    assert response.status_code == 401


def test_token_of_a_disabled_client_stops_working(server, make_client, gateway):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    assert client.get("Patient").status_code == 200
    with gateway.transaction() as session:
        from gateway.store.models import ClientRow

        session.get(ClientRow, "social-work").active = False
    time.sleep(1.1)  # the gateway re-checks a client's registration at most once a second
    response = client.get("Patient")
    assert response.status_code == 401 and "no longer registered" in response.text
