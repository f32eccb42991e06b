"""``pathway demo``: a fresh database holding the demo partnership and synthetic people.

Everything goes through the same code partners use: configuration through
the directory import, people through the FHIR service, the pathway through
its workflow, so the demo shows the product, not a fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

from gateway.app import create_app
from gateway.auth.clients import credentials, new_client_key, register_client
from gateway.auth.tokens import Principal
from gateway.conf import Conf, load_conf
from gateway.console.accounts import create_demo_accounts
from gateway.demo_inbox import demo_conf
from gateway.demo_people import DemoPerson, demo_people
from gateway.directory import import_conf
from gateway.fhir.access import INTERNAL, Caller
from gateway.fhir.service import FhirService
from gateway.ingest.pipeline import id_scheme
from gateway.pathway.demo import run_demo_pathways
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.store.crypto import write_owner_only
from gateway.store.db import make_engine
from gateway.store.models import Base


def fresh_database(settings: Settings) -> None:
    """Remove every table (SQLite: the file) so the demo starts empty."""
    url = settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def _caller_for(conf: Conf, organization_id: str) -> Caller:
    organization = conf.organization(organization_id)
    assert organization is not None
    primary = organization.primary_identifier()
    principal = Principal("pathway-demo", f"{primary.system}|{primary.value}", frozenset(), frozenset(), INTERNAL, 0)
    return Caller(principal, "CAREMGT")


def _store_person(fhir: FhirService, conf: Conf, person: DemoPerson) -> None:
    """Record a demo person as the HSCP (person, carers, consents) and their GP (clinical)."""
    hscp = _caller_for(conf, conf.pathway.rehab_team)
    gp_reference = (person.patient.get("generalPractitioner") or [{}])[0].get("reference", "")
    gp = _caller_for(conf, gp_reference.split("/", 1)[1]) if gp_reference.startswith("Organization/") else hscp
    fhir.store_all(hscp, [dict(r) for r in (person.patient, *person.related, *person.consents)])
    fhir.store_all(gp, [dict(r) for r in person.clinical])


def write_credentials(gateway: Gateway, conf: Conf, out: Path, port: int) -> list[str]:
    """A fresh key pair per configured client; one credentials file each (owner-only)."""
    clients_dir = out / "clients"
    written = []
    with gateway.transaction() as session:
        for organization in conf.organizations:
            primary = organization.primary_identifier()
            for client in organization.clients:
                key = new_client_key()
                row = register_client(
                    session,
                    client.id,
                    f"{primary.system}|{primary.value}",
                    list(client.scopes),
                    kind=client.kind,
                    roles=list(client.roles),
                    public_keys=[key.public_jwk],
                    replace_keys=True,
                )
                document = orjson.dumps(credentials(row, key, f"http://127.0.0.1:{port}"), option=orjson.OPT_INDENT_2)
                write_owner_only(clients_dir / f"{client.id}.json", document)
                written.append(client.id)
    return written


def build_demo(settings: Settings, out: Path, port: int = 8000) -> dict[str, Any]:
    """Fresh database, configuration (with the partners' webhooks on demo inboxes beside the
    gateway, see ``gateway.demo_inbox``), credentials, synthetic people at every stage."""
    conf_dir, inboxes = demo_conf(settings.conf_dir, out, port)
    conf = load_conf(conf_dir)
    fresh_database(settings)
    gateway = Gateway.start(settings)
    try:
        imported = import_conf(gateway, conf, conf_dir)
        clients = write_credentials(gateway, conf, out, port)
        console = create_demo_accounts(gateway, out)
        app = create_app(gateway=gateway)
        hscp = conf.organization(conf.pathway.rehab_team).primary_identifier()
        people = demo_people(conf, ids=id_scheme(gateway, f"{hscp.system}|{hscp.value}"))
        for person in people:
            _store_person(app.state.fhir, conf, person)
        stages = run_demo_pathways(app, people)
    finally:
        gateway.close()
    return {
        "database": settings.database_url,
        "imported": imported,
        "clients": {name: str(out / "clients" / f"{name}.json") for name in clients},
        "console": {"url": "/console/", "accounts": sorted(console["accounts"]), "passwords_in": console["file"]},
        "people": len(people),
        "stages": stages,
        "inboxes": inboxes,
    }
