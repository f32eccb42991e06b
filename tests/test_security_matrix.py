"""Bad actors and bad input over real HTTP: forged and stale tokens, other organisations,
carers reaching for clinical data, injection and oversized input, floods, console headers.

Assertion attacks on the token endpoint that tests/test_auth.py already covers (expired,
too long, wrong aud, nbf, sub, replayed jti, unknown client, wrong key, alg none, HS256 with
the client's public key, disabled client) are not repeated here.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from sqlalchemy import delete

from gateway.app import create_app
from gateway.auth.tokens import ASSERTION_TYPE, AccessTokens, AuthError
from gateway.client import client_assertion
from gateway.fhir.capability import SUPPORTED_TYPES
from gateway.ratelimit import MB, InputLimits, RateLimit, TokenBuckets
from gateway.store.models import ClientRow
from gateway.fhir.access import DIRECTORY_CUSTODIAN
from tests.conftest import ALL_SCOPES, HSCP, LiveServer, free_port
from tests.test_sharing import CARERS_CENTRE, partnership, person  # noqa: F401 - fixtures

STRANGER = "https://pathway.scot/Id/partner|not-a-partner"
DIRECTORY_TYPES = {"Organization", "Practitioner", "PractitionerRole"}
CLINICAL_TYPES = ["Condition", "Observation", "MedicationStatement", "MedicationRequest", "MedicationDispense", "AllergyIntolerance", "Encounter", "Flag"]
CODE = {"text": "test"}


def sample(resource_type: str, patient: str) -> dict[str, Any]:
    """The smallest valid resource of each supported type, about ``patient`` where it can be."""
    subject = {"reference": patient}
    shapes: dict[str, dict[str, Any]] = {
        "Patient": {"name": [{"family": "Other"}]},
        "RelatedPerson": {"patient": subject},
        "Organization": {"name": "A practice"},
        "Practitioner": {"name": [{"family": "Doctor"}]},
        "PractitionerRole": {"active": True},
        "Condition": {"subject": subject, "code": CODE},
        "Observation": {"status": "final", "code": CODE, "subject": subject},
        "MedicationStatement": {"status": "active", "medicationCodeableConcept": CODE, "subject": subject},
        "MedicationRequest": {"status": "active", "intent": "order", "medicationCodeableConcept": CODE, "subject": subject},
        "Encounter": {"status": "finished", "class": {"code": "AMB"}, "subject": subject},
        "EpisodeOfCare": {"status": "active", "patient": subject},
        "CarePlan": {"status": "active", "intent": "plan", "subject": subject},
        "ServiceRequest": {"status": "active", "intent": "order", "subject": subject},
        "Task": {"status": "draft", "intent": "order", "for": subject},
        "QuestionnaireResponse": {"status": "completed", "subject": subject},
        "Communication": {"status": "completed", "subject": subject},
        "Consent": {
            "status": "draft",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": subject,
        },
        "Flag": {"status": "active", "code": CODE, "subject": subject},
        "RiskAssessment": {"status": "final", "subject": subject},
        "AllergyIntolerance": {"patient": subject},
        "MedicationDispense": {"status": "completed", "medicationCodeableConcept": CODE, "subject": subject},
        "Provenance": {"target": [subject], "recorded": "2026-11-22T10:00:00Z", "agent": [{"who": {"display": "ingest"}}]},
    }
    if resource_type not in shapes:
        raise AssertionError(f"{resource_type} is served now: add its smallest valid shape to sample()")
    return {"resourceType": resource_type, **shapes[resource_type]}


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _api_refuses(server: LiveServer, token: str, words: str = "") -> None:
    response = httpx.get(f"{server.url}/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and words in body["issue"][0]["diagnostics"]


# --- token attacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"iss": "someone-else"}, "iss and sub"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),
        ({"jti": ""}, "no jti"),
        ({"aud": ["https://elsewhere.example/oauth/token"]}, "aud"),
    ],
)
def test_assertion_with_wrong_issuer_future_iat_or_no_jti_is_refused(server, make_client, overrides, words):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    assertion = client_assertion(creds["client_id"], creds["token_url"], creds["private_key_pem"], creds["kid"], **overrides)
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, "client_id": "social-work"}
    response = httpx.post(f"{server.url}/oauth/token", data=form)
    assert response.status_code == 401, response.text
    assert words in response.json()["issue"][0]["diagnostics"]


def test_expired_access_token_signed_by_the_gateway_is_refused(server, gateway):  # type: ignore[no-untyped-def]
    now = int(time.time())
    stale = gateway.signing_key.sign_jwt({"sub": "social-work", "org": HSCP, "scope": "system/*.read", "iat": now - 900, "exp": now - 600})
    _api_refuses(server, stale, "expired")


def test_a_jwt_the_gateway_signed_that_is_not_an_access_token_is_refused(server, gateway):  # type: ignore[no-untyped-def]
    now = int(time.time())
    claims = {"iss": server.url, "aud": server.url, "sub": "social-work", "org": HSCP, "scope": "system/*.read", "exp": now + 60}
    private = ECKey.import_key((gateway.settings.secrets_dir / "gateway-signing-key.pem").read_bytes())
    other_kind = jwt.encode({"alg": "ES384", "kid": gateway.signing_key.kid, "typ": "JWT"}, claims, private, algorithms=["ES384"])
    _api_refuses(server, other_kind, "not valid")


def test_an_access_token_naming_another_issuer_or_audience_is_refused(gateway) -> None:  # type: ignore[no-untyped-def]
    now = int(time.time())
    pinned = AccessTokens(gateway.signing_key, issuer="https://pathway.example")
    good = {"iss": "https://pathway.example", "aud": "https://pathway.example", "sub": "social-work", "org": HSCP, "exp": now + 60}
    assert pinned.verify(gateway.signing_key.sign_jwt(good)).client_id == "social-work"
    for wrong in ({"iss": "https://elsewhere.example"}, {"aud": "https://elsewhere.example"}):
        with pytest.raises(AuthError, match="access token is not valid"):
            pinned.verify(gateway.signing_key.sign_jwt(good | wrong))
    with pytest.raises(AuthError, match="access token is not valid"):  # unpinned, issuer and audience must still agree
        AccessTokens(gateway.signing_key).verify(gateway.signing_key.sign_jwt(good | {"aud": "https://elsewhere.example"}))


def test_access_token_with_alg_none_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    claims = _claims(make_client("social-work").token())
    _api_refuses(server, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", "not valid")


def test_access_token_forged_with_hmac_over_the_published_key_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    """Algorithm confusion: the gateway's public JWK used as an HS384 secret."""
    claims = _claims(make_client("social-work").token())
    public = httpx.get(f"{server.url}/.well-known/jwks.json").json()["keys"][0]
    for secret in (json.dumps(public).encode(), public["x"].encode()):
        forged = jwt.encode({"alg": "HS384", "kid": public.get("kid")}, claims, OctKey.import_key(secret), algorithms=["HS384"])
        _api_refuses(server, forged, "not valid")


def test_access_token_with_widened_scope_and_the_old_signature_is_refused(server, make_client):  # type: ignore[no-untyped-def]
    client = make_client("facility", "https://pathway.scot/Id/partner|rehab-tayview-house", ["system/*.read"])
    head, _, rest = client.token().partition(".")
    claims, signature = _claims(f"{head}.{rest}"), rest.split(".")[1]
    claims.update(scope="system/*.read system/*.write", org=HSCP)
    _api_refuses(server, f"{head}.{_b64(claims)}.{signature}", "not valid")


def test_token_of_a_deleted_client_stops_working(server, make_client, gateway):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    assert client.get("Patient").status_code == 200
    with gateway.transaction() as session:
        session.execute(delete(ClientRow).where(ClientRow.id == "social-work"))
    time.sleep(1.1)  # registrations are re-checked at most once a second
    response = client.get("Patient")
    assert response.status_code == 401 and "no longer registered" in response.json()["issue"][0]["diagnostics"]
    assert client.post("Patient", sample("Patient", "Patient/x")).status_code == 401


# --- other organisations, every resource type ----------------------------------------------------


def hold(social, resource_type: str, gateway) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A person and one resource of ``resource_type`` about them, held by the HSCP (a directory
    entry comes from the configuration: partners may not write one)."""
    patient = social.post("Patient", sample("Patient", ""))
    assert patient.status_code == 201, patient.text
    ref = f"Patient/{patient.json()['id']}"
    if resource_type == "Patient":
        return {"patient": ref, "id": patient.json()["id"]}
    response = social.post(resource_type, sample(resource_type, ref))
    if resource_type in DIRECTORY_TYPES:
        assert response.status_code == 403, (resource_type, response.text)
        with gateway.transaction() as session:
            entry = gateway.repository(session).create(sample(resource_type, ref), DIRECTORY_CUSTODIAN)
        return {"patient": ref, "id": entry.id}
    assert response.status_code == 201, (resource_type, response.text)
    return {"patient": ref, "id": response.json()["id"]}


@pytest.mark.parametrize("resource_type", SUPPORTED_TYPES)
def test_another_organisation_cannot_read_search_change_or_delete(make_client, gateway, resource_type):  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    held = hold(social, resource_type, gateway)
    stranger = make_client("stranger", STRANGER, ALL_SCOPES)
    resource_id = held["id"]
    path = f"{resource_type}/{resource_id}"
    directory = resource_type in DIRECTORY_TYPES

    read = stranger.get(path)
    assert read.status_code == (200 if directory else 404), read.text
    found = stranger.get(resource_type).json()
    assert (resource_id in {e["resource"].get("id") for e in found.get("entry", [])}) == directory
    if not directory:
        assert stranger.get(f"{path}/_history").status_code == 404
        assert stranger.get(f"{path}/_history/1").status_code == 404
        by_patient = stranger.get(f"{resource_type}?patient={held['patient']}") if resource_type != "Patient" else None
        assert by_patient is None or by_patient.status_code == 400 or not [
            e for e in by_patient.json().get("entry", []) if e["resource"]["resourceType"] == resource_type
        ]

    changed = {**sample(resource_type, held["patient"]), "id": resource_id}
    for response in (
        stranger.put(path, changed, headers={"If-Match": 'W/"1"'}),
        stranger.request("PATCH", path, content=b'[{"op": "add", "path": "/language", "value": "en"}]', headers={"Content-Type": "application/json-patch+json"}),
        stranger.request("DELETE", path),
    ):
        assert response.status_code in (403, 404), response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    unchanged = social.get(path)
    assert unchanged.status_code == 200 and unchanged.json()["meta"]["versionId"] == "1"


# --- a carer's portal ------------------------------------------------------------------------------


def test_carer_portal_gets_no_clinical_data_whatever_it_asks_for(person, make_client):  # type: ignore[no-untyped-def]
    portal = make_client("carer-portal", CARERS_CENTRE, ALL_SCOPES, kind="portal")
    as_carer = {"X-Pathway-Acting-For": person["carer"], "X-Pathway-Purpose": "carer-support"}
    for purpose in ("carer-support", "TREAT", "ETREAT"):
        headers = {**as_carer, "X-Pathway-Purpose": purpose}
        for resource_type in CLINICAL_TYPES:
            found = portal.get(f"{resource_type}?patient={person['patient']}", headers=headers)
            assert found.status_code == 200, found.text
            assert [e for e in found.json().get("entry", []) if e["resource"]["resourceType"] == resource_type] == []
        assert portal.get(f"MedicationStatement/{person['methadone']}", headers=headers).status_code == 404
        assert portal.get(f"Condition/{person['depression']}/_history/1", headers=headers).status_code == 404
    # acting for the person themself, or for nobody, is no way round it
    as_patient = {"X-Pathway-Acting-For": person["patient"], "X-Pathway-Purpose": "carer-support"}
    assert portal.get(f"MedicationStatement/{person['methadone']}", headers=as_patient).status_code == 404
    assert portal.get(f"MedicationStatement/{person['methadone']}").status_code == 400


def test_carer_portal_cannot_change_records_even_with_write_scopes(person, make_client):  # type: ignore[no-untyped-def]
    portal = make_client("carer-portal", CARERS_CENTRE, ALL_SCOPES, kind="portal")
    as_carer = {"X-Pathway-Acting-For": person["carer"], "X-Pathway-Purpose": "carer-support"}
    note = {"resourceType": "Observation", "status": "final", "code": {"text": "carer note"}, "subject": {"reference": person["patient"]}}
    attempts = [
        portal.post("Observation", json=note, headers=as_carer),
        portal.request("DELETE", f"MedicationStatement/{person['methadone']}", headers=as_carer),
        portal.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": note, "request": {"method": "POST", "url": "Observation"}}]}, headers=as_carer),
    ]
    for refused in attempts:
        assert refused.status_code in (403, 404) and refused.json()["resourceType"] == "OperationOutcome", refused.text
    assert "portal" in attempts[0].json()["issue"][0]["diagnostics"]


def test_only_portal_clients_may_act_for_a_person(person, make_client):  # type: ignore[no-untyped-def]
    system = make_client("system-client", CARERS_CENTRE, ALL_SCOPES)
    response = system.get(f"EpisodeOfCare/{person['progress']}", headers={"X-Pathway-Acting-For": person["carer"]})
    assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome"


# --- injection and oversized input ----------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE resources; --",
    "x') UNION SELECT body FROM resources --",
    '"; SELECT pg_sleep(5); --',
    "%' OR 1=1 --",
    "\\x00\\u0000",
    "Patient/1' OR 1=1 --",
    "ge2020-01-01' OR '1'='1",
]


def test_sql_in_search_values_ids_and_types_finds_nothing_and_breaks_nothing(make_client, gateway):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    task = hold(social, "Task", gateway)
    for param in ("identifier", "status", "patient", "focus", "owner", "category", "_lastUpdated", "_count", "_offset"):
        for value in INJECTIONS:
            # strict: under the default (lenient) a parameter Task lacks (category) is ignored, not refused
            response = social.get("Task", params={param: value}, headers={"Prefer": "handling=strict"})
            assert response.status_code in (200, 400), (param, value, response.text)
            body = response.json()
            if response.status_code == 400:
                assert body["resourceType"] == "OperationOutcome"
            else:
                assert [e for e in body.get("entry", []) if e["resource"]["resourceType"] == "Task"] == [], (param, value)
    for value in INJECTIONS:
        for path in ("Task/" + value.replace("/", "%2F"), value.replace("/", "%2F").replace("?", "%3F")):
            response = social.get(path)
            assert response.status_code in (400, 403, 404) and response.json()["resourceType"] == "OperationOutcome"
    assert social.get(f"Task/{task['id']}").status_code == 200  # nothing dropped or changed
    assert [e["resource"]["id"] for e in social.get("Task").json()["entry"]] == [task["id"]]


def test_oversized_search_values_are_refused(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    for params in ({"identifier": "x" * 5000}, {"status": ",".join(["active"] * 2000)}):
        response = social.get("Task", params=params)
        assert response.status_code in (400, 413, 414), response.text
        if response.status_code in (400, 413):
            assert response.json()["resourceType"] == "OperationOutcome"


def test_oversized_bodies_are_refused_with_413_declared_or_streamed(make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    big = b'{"resourceType": "Patient", "name": [{"family": "' + b"x" * (6 * MB) + b'"}]}'
    declared = social.request("POST", "Patient", content=big, headers={"Content-Type": "application/fhir+json"})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    streamed = social.request("POST", "Patient", content=chunks(), headers={"Content-Type": "application/fhir+json"})
    for response in (declared, streamed):
        assert response.status_code == 413, response.text[:300]
        assert response.json()["issue"][0]["code"] == "too-long"
    assert [e for e in social.get("Patient").json().get("entry", []) if e["resource"]["resourceType"] == "Patient"] == []


def test_ingest_has_a_larger_body_limit_than_the_fhir_api() -> None:
    limits = InputLimits(app=None)  # type: ignore[arg-type]
    assert limits.limit_for("/fhir/Patient") == 5 * MB
    assert limits.limit_for("/ingest/emis") > 5 * MB


# --- floods ---------------------------------------------------------------------------------------


def test_rate_limit_setting_is_parsed_or_refused_with_a_reason() -> None:
    assert RateLimit.parse("2000,4000") == RateLimit(2000, 4000)
    assert RateLimit.parse("10") == RateLimit(10, 20)
    assert RateLimit.parse("off") is None
    for bad in ("fast", "0.5,0", "-3"):
        with pytest.raises(ValueError, match="PATHWAY_RATE_LIMIT"):
            RateLimit.parse(bad)


def test_serving_processes_share_the_rate_limit_so_together_they_allow_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATHWAY_RATE_LIMIT", "100,300")
    assert RateLimit.from_env() == RateLimit(100, 300)
    assert RateLimit.from_env(processes=2) == RateLimit(50, 150)
    monkeypatch.setenv("PATHWAY_RATE_LIMIT", "off")
    assert RateLimit.from_env(processes=2) is None


def test_token_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    now = [0.0]
    buckets = TokenBuckets(RateLimit(rate=2, burst=3), clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # buckets are per caller
    now[0] = 0.5
    assert buckets.take("a") == 0 and buckets.take("a") > 0
    now[0] = 100.0
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0] and buckets.take("a") > 0


@pytest.fixture
def limited_server(gateway, monkeypatch) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATHWAY_RATE_LIMIT", "0.5,6")
    with LiveServer(create_app(gateway=gateway), free_port()) as live:
        yield live


def test_a_flooding_client_gets_429_and_others_carry_on(gateway, limited_server):  # type: ignore[no-untyped-def]
    from gateway.auth.clients import credentials, new_client_key, register_client
    from gateway.client import PathwayClient

    def client(name: str) -> PathwayClient:
        key = new_client_key()
        with gateway.transaction() as session:
            registered = register_client(session, name, HSCP, ALL_SCOPES, public_keys=[key.public_jwk])
            return PathwayClient(credentials(registered, key, limited_server.url))

    noisy, quiet = client("noisy"), client("quiet")
    noisy.token(), quiet.token()  # two token requests from this address
    statuses = [noisy.get("Patient").status_code for _ in range(8)]
    assert statuses[:6] == [200] * 6 and statuses[6:] == [429, 429]
    refused = noisy.get("Patient")
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["issue"][0]["code"] == "throttled"
    assert quiet.get("Patient").status_code == 200
    # a forged token naming the quiet client counts against the sender's address, not against "quiet"
    forged = f"{_b64({'alg': 'none'})}.{_b64({'sub': 'quiet', 'exp': int(time.time()) + 60})}."
    for _ in range(6):
        httpx.get(f"{limited_server.url}/fhir/Patient", headers={"Authorization": f"Bearer {forged}"})
    assert quiet.get("Patient").status_code == 200
    assert httpx.get(f"{limited_server.url}/healthz").status_code == 200  # health checks are never limited


# --- the console's browser defences ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/login", "/console/people", "/console/no-such-page"])
def test_console_pages_forbid_framing_and_sniffing_even_when_signed_out(server, path):  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}{path}", follow_redirects=True)
    assert response.url.path == "/console/login" or response.status_code == 404
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy and "object-src 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_console_sign_in_cookie_is_http_only_strict_and_secure_over_https(gateway, server):  # type: ignore[no-untyped-def]
    plain = httpx.get(f"{server.url}/console/login")
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "secure" not in cookie.replace("samesite", "")
    original = gateway.settings
    gateway.settings = dataclasses.replace(original, public_url="https://pathway.example")
    try:
        secured = httpx.get(f"{server.url}/console/login")
    finally:
        gateway.settings = original
    assert "; secure" in secured.headers["set-cookie"].lower()


def test_nul_characters_are_refused_not_sent_to_the_database(server, make_client):  # type: ignore[no-untyped-def]
    social = make_client("social-work")
    in_url = social.get("Task", params={"status": "ready\x00"})
    assert in_url.status_code == 400 and in_url.json()["resourceType"] == "OperationOutcome"
    assert social.get("Patient/abc%00def").status_code == 400
    patient = {"resourceType": "Patient", "identifier": [{"system": "https://pathway.scot/Id/test", "value": "a\u0000b"}]}
    in_body = social.post("Patient", patient)
    assert in_body.status_code in (201, 400, 422), in_body.text  # stored as sent, or refused: never a database error
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": "x.y.z", "client_id": "a\x00b"}
    in_form = httpx.post(f"{server.url}/oauth/token", data=form)
    assert in_form.status_code in (400, 401) and in_form.json()["resourceType"] == "OperationOutcome"
