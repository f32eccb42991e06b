"""The demo partnership built as ``pathway demo --no-serve`` builds it, served on 127.0.0.1,
with a PathwayClient per demo credentials file: for tests that act as its partners would.

The database is a SQLite file in a temporary directory, or a fresh PostgreSQL database
when PATHWAY_TEST_DATABASE_URL names a server (as ``tests/conftest.py`` does per test).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


from gateway.app import create_app
from gateway.client import PathwayClient
from gateway.conf import load_conf
from gateway.demo import build_demo
from gateway.demo_people import DemoPerson, demo_people
from gateway.runtime import Gateway
from gateway.settings import Settings
from mappings.identifiers import CHI_SYSTEM
from tests.conftest import REPO, LiveServer, empty_database, free_port


class DemoWorld:
    """A built demo, served; ``client(name)`` calls the API as that demo client."""

    def __init__(self, settings: Settings, out: Path, port: int, summary: dict[str, Any]) -> None:
        self.settings, self.out, self.port, self.summary = settings, out, port, summary
        # The builder's people: the same seed and day give the same names, CHIs and consents;
        # stored ids are the installation's own (``patient_id`` finds a Patient's).
        self.people: list[DemoPerson] = demo_people(load_conf(settings.conf_dir))
        self.gateway: Gateway | None = None
        self.server: LiveServer | None = None
        self._clients: dict[str, PathwayClient] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve the demo database with a new gateway and application (as after a restart)."""
        self.gateway = Gateway.start(self.settings)
        self.server = LiveServer(create_app(gateway=self.gateway), self.port).__enter__()

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None
        if self.gateway is not None:
            self.gateway.close()
            self.gateway = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, name: str) -> PathwayClient:
        """The demo client ``name``, from its credentials file as ``pathway demo`` wrote it."""
        if name not in self._clients:
            self._clients[name] = PathwayClient.from_file(self.out / "clients" / f"{name}.json")
        return self._clients[name]

    def opted_out(self) -> DemoPerson:
        """The demo person who refused sharing with everyone (policy OPTOUT)."""
        return next(p for p in self.people if p.consents and p.consents[0]["policyRule"]["coding"][0]["code"] == "OPTOUT")

    def patient_id(self, person: DemoPerson) -> str:
        """The stored id of a demo person's Patient, found by CHI as the HSCP (which holds it)."""
        found = self.client("social-work").get(f"Patient?identifier={CHI_SYSTEM}|{chi_of(person)}")
        found.raise_for_status()
        return next(e["resource"]["id"] for e in found.json()["entry"] if e["resource"]["resourceType"] == "Patient")


def chi_of(person: DemoPerson) -> str:
    return next(i["value"] for i in person.patient["identifier"] if i["system"] == CHI_SYSTEM)


@contextmanager
def demo_world(directory: Path) -> Iterator[DemoWorld]:
    """Build the demo into a fresh database under ``directory`` and serve it until the end."""
    with empty_database(directory, "pathway_demo") as database_url:
        settings = Settings(database_url=database_url, secrets_dir=directory / "secrets", conf_dir=REPO / "conf", run_workers=False)
        port = free_port(run=8)  # the gateway, then room for an inbox per subscribing partner (4 in the demo)
        out = directory / "demo"
        world = DemoWorld(settings, out, port, build_demo(settings, out, port=port))
        world.start()
        try:
            yield world
        finally:
            world.stop()
