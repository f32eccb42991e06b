"""SMART App Launch 2 for backend services: discovery, v1 and v2 scopes, the authlib client."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.auth.scopes import SPECIAL_SCOPES, allows, grantable, is_valid_scope
from gateway.cli import main
from gateway.client import PathwayClient, ShortPrivateKeyJWT
from gateway.conf import load_conf

from .conftest import FACILITY
from .test_fhir_api import patient

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"])
def test_discovery_is_public_at_the_root_and_under_the_fhir_base(server, path):  # type: ignore[no-untyped-def]
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["token_endpoint"] == f"{server.url}/oauth/token"
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(document["token_endpoint_auth_signing_alg_values_supported"]) == {"ES384", "RS384"}
    assert document["grant_types_supported"] == ["client_credentials"]
    assert set(document["capabilities"]) == {"client-confidential-asymmetric", "permission-v1", "permission-v2"}
    assert "authorization_endpoint" not in document  # no user-facing launch here
    assert httpx.get(document["jwks_uri"], timeout=10).json()["keys"]


def test_scopes_supported_lists_every_scope_the_partnership_registers_and_only_valid_ones(server):  # type: ignore[no-untyped-def]
    supported = httpx.get(f"{server.url}/fhir/.well-known/smart-configuration", timeout=10).json()["scopes_supported"]
    registered = {s for org in load_conf(CONF).organizations for c in org.clients for s in c.scopes}
    assert registered <= set(supported)
    assert SPECIAL_SCOPES <= set(supported)
    assert {"system/Patient.rs", "system/Task.cruds", "system/*.cruds", "system/Patient.read"} <= set(supported)
    assert all(is_valid_scope(s) for s in supported)
    # each is granted whole to a client registered for everything
    everything = ["system/*.*", *SPECIAL_SCOPES]
    assert all(grantable(everything, [s]) == [s] for s in supported)


@pytest.mark.parametrize(
    ("granted", "resource_type", "mode", "allowed"),
    [
        (["system/Patient.read"], "Patient", "read", True),
        (["system/Patient.rs"], "Patient", "read", True),
        (["system/Patient.rs"], "Patient", "r", True),
        (["system/Patient.read"], "Patient", "s", True),
        (["system/Patient.rs"], "Patient", "write", False),
        (["system/Patient.r"], "Patient", "r", True),
        (["system/Patient.r"], "Patient", "s", False),
        (["system/Patient.r"], "Patient", "read", False),  # v1 read is r and s
        (["system/Patient.r", "system/*.s"], "Patient", "read", True),
        (["system/Task.cud"], "Task", "write", True),
        (["system/Task.write"], "Task", "cu", True),
        (["system/Task.cu"], "Task", "write", False),
        (["system/Task.cruds"], "Task", "read", True),
        (["system/*.cruds"], "Consent", "write", True),
        (["system/*.*"], "Consent", "d", True),
        (["system/Task.cruds"], "Patient", "read", False),
        (["patient/*.read", "user/*.rs"], "Patient", "read", False),
        (["ingest"], "Patient", "read", False),
        ([], "Patient", "read", False),
    ],
)
def test_v1_and_v2_scopes_mean_the_same(granted, resource_type, mode, allowed):  # type: ignore[no-untyped-def]
    assert allows(granted, resource_type, mode) is allowed


@pytest.mark.parametrize("scope", ["system/Patient.sr", "system/Patient.", "system/Patient.rx", "patient/Patient.rs", "system/patient.rs", "system/Task.cruds?status=requested"])
def test_malformed_scopes_are_not_valid(scope):  # type: ignore[no-untyped-def]
    assert not is_valid_scope(scope)


@pytest.mark.parametrize(
    ("registered", "requested", "granted"),
    [
        # v2 asked of a v1 registration: answered in v2, cut to what is registered
        (["system/*.read", "system/Task.write"], "system/Patient.rs system/Task.cruds", "system/Patient.rs system/Task.cruds"),
        (["system/*.read"], "system/Patient.cruds system/*.c", "system/Patient.rs"),
        # v1 asked of a v2 registration: answered in v1
        (["system/Patient.rs", "system/Task.cruds"], "system/*.read system/Task.write", "system/Patient.read system/Task.read system/Task.write"),
        # v1 cannot say "read but not search": the grant says it in v2
        (["system/Patient.r"], "system/Patient.read", "system/Patient.r"),
        # wildcards narrowed to the types registered; special scopes all or nothing; unknown dropped
        (["system/*.read", "system/Task.write", "ingest"], "system/*.* ingest audit.read launch/patient", "system/*.read system/Task.write ingest"),
    ],
)
def test_token_scope_is_narrowed_to_the_registration_in_the_syntax_asked(make_client, registered, requested, granted):  # type: ignore[no-untyped-def]
    registered_client = make_client("narrowed", FACILITY, registered)
    client = PathwayClient(registered_client.credentials, scope=requested)
    try:
        client.token()
        assert client.http.token["scope"] == granted
    finally:
        client.close()


def test_v2_token_reads_and_searches_but_does_not_write(make_client):  # type: ignore[no-untyped-def]
    writer = make_client("social-work")
    created = writer.post("Patient", patient()).json()
    reader = PathwayClient(writer.credentials, scope="system/Patient.rs")
    try:
        assert reader.get(f"Patient/{created['id']}").status_code == 200
        assert created["id"] in {e["resource"]["id"] for e in reader.get("Patient").json().get("entry", [])}
        refused = reader.post("Patient", patient(serial=1))
        assert refused.status_code == 403 and "create of Patient" in refused.text
        assert reader.get("Task").status_code == 403
    finally:
        reader.close()


def test_each_v2_letter_allows_exactly_its_interaction(make_client):  # type: ignore[no-untyped-def]
    writer = make_client("social-work")
    created = writer.post("Patient", patient()).json()
    path = f"Patient/{created['id']}"
    expected = {  # scope -> (read, history, search, update, delete) as allowed or refused
        "system/Patient.r": (200, 200, 403, 403, 403),
        "system/Patient.s": (403, 403, 200, 403, 403),
        "system/Patient.u": (403, 403, 403, 200, 403),
    }
    for scope, (read, history, search, update, delete) in expected.items():
        client = PathwayClient(writer.credentials, scope=scope)
        try:
            current = writer.get(path).json()
            answers = (
                client.get(path).status_code,
                client.get(f"{path}/_history").status_code,
                client.get("Patient").status_code,
                client.put(path, current, headers={"If-Match": f'W/"{current["meta"]["versionId"]}"'}).status_code,
                403 if update == 200 else client.delete(path).status_code,  # keep the Patient for the next scope
            )
        finally:
            client.close()
        assert answers == (read, history, search, update, delete), scope


def test_v2_cruds_token_creates_updates_and_deletes(make_client):  # type: ignore[no-untyped-def]
    registered = make_client("social-work", scopes=["system/Patient.cruds"])
    assert registered.token()
    created = registered.post("Patient", patient(serial=2))
    assert created.status_code == 201, created.text
    body = created.json()
    body["name"][0]["family"] = "Reid-Brown"
    assert registered.put(f"Patient/{body['id']}", body).status_code == 200
    assert registered.delete(f"Patient/{body['id']}").status_code == 204
    assert registered.get(f"Patient/{body['id']}").status_code == 410


def test_the_assertion_authlib_builds_is_short_fresh_and_addressed_to_the_token_url(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    signer = ShortPrivateKeyJWT(creds["token_url"], creds["kid"])
    auth = client.http.client_auth(signer)
    key = ECKey.import_key(creds["private_key_pem"])
    tokens = [jwt.decode(signer.sign(auth, creds["token_url"]), key, algorithms=["ES384"]) for _ in range(2)]
    for token in tokens:
        claims = token.claims
        assert token.header["alg"] == "ES384" and token.header["kid"] == creds["kid"]
        assert claims["iss"] == claims["sub"] == "social-work" and claims["aud"] == creds["token_url"]
        assert 0 < claims["exp"] - time.time() <= 300
    assert tokens[0].claims["jti"] != tokens[1].claims["jti"]


def test_client_fetches_a_new_token_when_its_token_is_about_to_expire(make_client):  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    first = client.token()
    assert client.token() == first  # kept while it is good
    client.http.token["expires_at"] = int(time.time()) + 10  # inside authlib's leeway
    second = client.token()
    assert second != first  # a second assertion (new jti) was accepted
    assert client.get("Patient").status_code == 200


def test_refused_token_request_raises(make_client):  # type: ignore[no-untyped-def]
    client = PathwayClient(make_client("social-work").credentials, scope="audit.read")
    try:
        with pytest.raises(Exception, match="invalid_scope"):
            client.token()
    finally:
        client.close()


def test_pathway_assertion_command_prints_an_accepted_assertion(server, make_client, tmp_path, capsys):  # type: ignore[no-untyped-def]
    creds = make_client("social-work").credentials
    path = tmp_path / "creds.json"
    path.write_bytes(orjson.dumps(creds))
    assert main(["assertion", str(path)]) == 0
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": capsys.readouterr().out.strip(),
    }
    assert httpx.post(creds["token_url"], data=form, timeout=10).status_code == 200


def test_capability_statement_names_smart_and_the_token_url(server):  # type: ignore[no-untyped-def]
    security = httpx.get(f"{server.url}/fhir/metadata", timeout=10).json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    (oauth,) = [e for e in security["extension"] if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"]
    assert oauth["extension"] == [{"url": "token", "valueUri": f"{server.url}/oauth/token"}]
