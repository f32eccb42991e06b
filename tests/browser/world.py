"""A small partnership for console tests: the demo configuration, console accounts, one
person with a carer, a break-glass override, a dead letter and a draft agreement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import orjson
from sqlalchemy import update

from gateway.auth.tokens import Principal
from gateway.conf import load_conf
from gateway.console.accounts import create_demo_accounts
from gateway.delivery.models import DeliveryRow
from gateway.delivery.outbox import enqueue
from gateway.directory import import_conf
from gateway.fhir.access import Caller
from gateway.runtime import Gateway
from gateway.sharing import break_glass
from gateway.store.models import AgreementRow
from gateway.store.repository import now_utc
from mappings.identifiers import CHI_SYSTEM, make_chi

REPO = Path(__file__).resolve().parents[2]
HSCP = "https://fhir.nhs.uk/Id/ods-organization-code|S037"
TAYVIEW = "https://pathway.scot/Id/partner|rehab-tayview-house"
DRAFT_AGREEMENT = "isa-console-draft"


@dataclass
class World:
    passwords: dict[str, str]
    patient_id: str
    chi: str
    carer_id: str
    grant_id: str
    dead_id: str


def build_world(gateway: Gateway, app, out: Path) -> World:  # type: ignore[no-untyped-def]
    conf = load_conf(REPO / "conf")
    import_conf(gateway, conf, REPO / "conf")
    accounts = create_demo_accounts(gateway, out)["accounts"]
    social_work = Caller(Principal("social-work", HSCP, frozenset(), frozenset({"key-worker"}), "system", 0), "CAREMGT")
    chi = make_chi(date(1984, 3, 9), "female", 12)
    fhir = app.state.fhir
    patient = fhir.create(
        social_work,
        {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": chi}], "name": [{"given": ["Isla"], "family": "Duncan"}], "birthDate": "1984-03-09", "gender": "female"},
        "Patient",
    )
    carer = fhir.create(
        social_work,
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": patient.reference},
            "identifier": [{"system": "https://pathway.scot/Id/test/carer", "value": "carer-1"}],
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH", "display": "mother"}]}],
            "name": [{"given": ["Morag"], "family": "Duncan"}],
        },
        "RelatedPerson",
    )
    with gateway.transaction() as session:
        duty = Caller(Principal("duty-social-worker", HSCP, frozenset({"break-glass"}), frozenset({"break-glass"}), "system", 0), "ETREAT")
        grant = break_glass.start(session, duty, patient=patient.reference, user="J Smith (duty social worker)", reason="Adult protection concern raised out of hours", basis="adult-support-protection", hours=4)
        queued = enqueue(session, event="task-status", recipient=TAYVIEW, focus="Task/example-task", patient=patient.reference, purpose="CAREMGT")
        session.execute(update(DeliveryRow).where(DeliveryRow.id == queued[0].id).values(status="dead", attempts=8, last_error="HTTP 503 from https://gateway.tayview-house.example/pathway/inbox"))
        body = {"id": DRAFT_AGREEMENT, "version": 1, "title": "HSCP and Tayview House - aftercare pilot", "status": "draft", "parties": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"}, {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}], "purposes": ["CAREMGT"], "categories": ["pathway-progress"], "lawful_basis": ["UK GDPR Art 6(1)(e)"], "start": "2026-01-01", "review_date": "2020-01-01"}
        session.add(AgreementRow(id=DRAFT_AGREEMENT, version=1, status="draft", body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode(), loaded=now_utc()))
    return World({name: a["password"] for name, a in accounts.items()}, patient.id, chi, carer.id, grant.id, queued[0].id)


class Browser:
    """A plain HTTP session against the console (cookies kept, CSRF token read from pages)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, follow_redirects=True, timeout=10)
        self.csrf = ""

    def login(self, username: str, password: str) -> httpx.Response:
        page = self.http.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        return self._remember(self.http.post("/console/login", data={"csrf": token, "username": username, "password": password, "next": "/console/"}))

    def get(self, path: str, **params: str) -> httpx.Response:
        return self._remember(self.http.get(path, params=params))

    def post(self, path: str, data: dict[str, object]) -> httpx.Response:
        return self._remember(self.http.post(path, data={"csrf": self.csrf, **data}))

    def _remember(self, response: httpx.Response) -> httpx.Response:
        found = re.search(r'name="csrf" value="([^"]+)"', response.text)
        if found:
            self.csrf = found.group(1)
        return response
