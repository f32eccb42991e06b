"""Shared fixtures: a real database (SQLite file, or PostgreSQL when
PATHWAY_TEST_DATABASE_URL names a server), a real gateway on 127.0.0.1 and
partner clients with real keys."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from gateway.app import create_app
from gateway.auth.clients import credentials, new_client_key, register_client
from gateway.client import PathwayClient
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.store.repository import now_utc

REPO = Path(__file__).resolve().parents[1]
PARTNER = "https://pathway.scot/Id/partner"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
HSCP = f"{ODS}|S037"
FACILITY = f"{PARTNER}|rehab-tayview-house"
ALL_SCOPES = ["system/*.read", "system/*.write"]


def privacy_consent(patient: str, provision: dict[str, Any], *, performer: str | None = None, **extra: Any) -> dict[str, Any]:
    """An active privacy Consent (LOINC 59284-0) about ``patient`` ("Patient/id") with this
    provision, recorded as signed by ``performer`` (a reference; the person by default)."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "performer": [{"reference": performer or patient}],
        **extra,
        "provision": provision,
    }


class Clock:
    """Time for the delivery worker and escalation: the real time moved on by ``offset``
    (tests move it instead of sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return now_utc() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _postgres_admin_url() -> str | None:
    url = os.environ.get("PATHWAY_TEST_DATABASE_URL", "")
    return url if url.startswith("postgresql") else None


@contextmanager
def empty_database(directory: Path, prefix: str = "pathway_test") -> Iterator[str]:
    """The URL of a fresh, empty database that lasts as long as the context: a SQLite file in
    ``directory``, or a new database on the PostgreSQL server PATHWAY_TEST_DATABASE_URL names."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield f"sqlite:///{directory / 'pathway.db'}"
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with empty_database(tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Partners' Subscriptions in tests point at receivers on 127.0.0.1.
    return Settings(database_url=database_url, secrets_dir=tmp_path / "secrets", conf_dir=REPO / "conf", run_workers=False, loopback_subscriptions=True)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    started = Gateway.start(settings)
    yield started
    started.close()


def free_port(run: int = 1) -> int:
    """A free port on 127.0.0.1; with ``run`` > 1, the first of that many free ports in a row
    (the demo serves its partners' inboxes on the gateway's port + 1, + 2, ...)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = sock.getsockname()[1]
        if first + run > 65536:
            continue
        probes = [socket.socket() for _ in range(run)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {run} free ports in a row on 127.0.0.1")


class LiveServer:
    """The gateway app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def app(gateway: Gateway):  # type: ignore[no-untyped-def]
    return create_app(gateway=gateway)


@pytest.fixture
def server(app) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with LiveServer(app, free_port()) as live:
        yield live


ClientFactory = Callable[..., PathwayClient]


@pytest.fixture
def make_client(gateway: Gateway, server: LiveServer) -> Iterator[ClientFactory]:
    """Register a client with a fresh key pair and return a PathwayClient for it."""
    made: list[PathwayClient] = []

    def make(client_id: str, organization: str = HSCP, scopes: list[str] = ALL_SCOPES, kind: str = "system", roles: list[str] = ()) -> PathwayClient:  # type: ignore[assignment]
        key = new_client_key()
        with gateway.transaction() as session:
            client = register_client(session, client_id, organization, scopes, kind=kind, roles=list(roles), public_keys=[key.public_jwk])
            creds = credentials(client, key, server.url)
        made.append(PathwayClient(creds))
        return made[-1]

    yield make
    for client in made:
        client.close()
