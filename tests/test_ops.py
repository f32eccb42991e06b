"""Operations: health, metrics, request ids, OpenAPI, and `pathway keys new`."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest

from gateway.cli import main
from gateway.client import PathwayClient


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The conftest settings with the OpenAPI description published (it is off by default)."""
    return dataclasses.replace(settings, expose_api_docs=True)


def test_health_checks_the_database(server):  # type: ignore[no-untyped-def]
    response = httpx.get(f"{server.url}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_health_reports_an_unreachable_database(server, gateway):  # type: ignore[no-untyped-def]
    gateway.engine.dispose()
    original = gateway.engine.url
    from sqlalchemy import create_engine

    gateway.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    try:
        response = httpx.get(f"{server.url}/healthz", timeout=10)
        assert response.status_code == 503 and response.json()["status"] == "unavailable"
    finally:
        gateway.engine = create_engine(original)


def test_metrics_count_requests_by_route_and_status(server):  # type: ignore[no-untyped-def]
    httpx.get(f"{server.url}/fhir/metadata")
    httpx.get(f"{server.url}/fhir/Patient")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'pathway_http_requests_total{method="GET",route="/fhir/metadata",status="200"}' in text
    assert 'route="/fhir/{resource_type}",status="401"' in text
    assert "pathway_http_request_seconds_bucket" in text


def test_every_response_carries_a_request_id(server):  # type: ignore[no-untyped-def]
    assert len(httpx.get(f"{server.url}/healthz").headers["x-request-id"]) == 32
    assert httpx.get(f"{server.url}/healthz", headers={"X-Request-Id": "abc123"}).headers["x-request-id"] == "abc123"


def test_openapi_describes_the_fhir_api(server):  # type: ignore[no-untyped-def]
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/fhir/{resource_type}/{resource_id}" in spec["paths"] and "/oauth/token" in spec["paths"]


def test_keys_new_registers_a_client_that_can_authenticate(server, settings, monkeypatch, tmp_path, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATHWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(settings.secrets_dir))
    out = tmp_path / "clients" / "tayview.json"
    code = main(
        ["keys", "new", "tayview", "--org", "https://pathway.scot/Id/partner|rehab-tayview-house",
         "--scopes", "system/*.read system/Task.write", "--base-url", server.url, "--out", str(out)]
    )
    assert code == 0 and oct(out.stat().st_mode & 0o777) == "0o600"
    creds = json.loads(out.read_text())
    assert creds["organization"] == {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}
    assert creds["token_url"] == f"{server.url}/oauth/token" and "PRIVATE KEY" in creds["private_key_pem"]
    client = PathwayClient(creds)
    assert client.get("Task?status=requested").status_code == 200
    assert main(["keys", "new", "bad", "--org", "no-bar", "--scopes", "x"]) == 2


def test_consent_decide_reads_stdin_and_answers_in_order(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    import io
    import sys

    items = [
        {"consents": [], "request": {"patient": [{"system": "https://fhir.nhs.uk/Id/chi-number", "value": "0101800002"}], "actor": [], "purpose": "TREAT"}},
        {"consents": [], "request": {"patient": [], "actor": []}},
    ]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(items).encode())))
    assert main(["consent", "decide"]) == 0
    decisions = json.loads(capsys.readouterr().out)
    assert [d["decision"] for d in decisions] == ["no-consent", "deny"]
    assert decisions[1]["reasons"] == ["purpose required"]
