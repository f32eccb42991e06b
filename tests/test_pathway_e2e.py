"""Issue 5's "must show": the whole pathway over real HTTP on 127.0.0.1 with the demo partnership's
configuration, five parties with real keys, a delivery worker and webhook receivers that check every
signature against the gateway's published JWKS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.client import PathwayClient
from gateway.conf import Conf, load_conf
from gateway.delivery import sync_subscriptions
from gateway.delivery.models import DeliveryRow
from gateway.delivery.notification import TOPIC_BASE
from gateway.delivery.worker import DeliveryWorker
from gateway.directory import import_conf
from gateway.fhir.search import SUBSETTED
from gateway.pathway.config import load_pathway_conf
from gateway.runtime import Gateway
from gateway.store.models import ConfDocumentRow
from gateway.store.repository import now_utc
from mappings.identifiers import REFERRAL_SYSTEM
from mappings.labels import CATEGORY_SYSTEM, SENSITIVITY_SYSTEM
from tests.conftest import FACILITY, HSCP, ODS, PARTNER, REPO, privacy_consent
from tests.test_delivery import FAST, Receiver
from tests.test_pathway_api import admit, consent_for, decide, move, moved, one, person, refer, star, to_residential

CARERS_CENTRE = f"{PARTNER}|dundee-carers-centre"
SNOMED = "http://snomed.info/sct"
EARLY_EXIT = {"coding": [{"system": "https://pathway.scot/CodeSystem/task-reason", "code": "early-exit"}]}
ALERT_WAIT_SECONDS = 10.0


@dataclass
class Parties:
    """The five partner systems of the walk, each with the client shape conf/partners.yaml gives it."""

    social: PathwayClient
    facility: PathwayClient
    agency: PathwayClient
    carer_portal: PathwayClient
    ig_officer: PathwayClient


def conf_client(make_client: Callable[..., PathwayClient], conf: Conf, client_id: str) -> PathwayClient:
    """A client registered exactly as the configuration declares it, with a fresh real key."""
    found = conf.client(client_id)
    assert found is not None, f"conf/partners.yaml has no client {client_id}"
    organization, client = found
    acting = organization.primary_identifier()
    return make_client(client.id, f"{acting.system}|{acting.value}", list(client.scopes), kind=client.kind, roles=list(client.roles))


@pytest.fixture
def conf() -> Conf:
    return load_conf(REPO / "conf")


@pytest.fixture
def parties(gateway: Gateway, conf: Conf, make_client) -> Parties:  # type: ignore[no-untyped-def]
    """The demo partnership imported (directory, clients, agreements, pathway.yaml) and its five parties."""
    import_conf(gateway, conf, REPO / "conf")
    client = lambda client_id: conf_client(make_client, conf, client_id)  # noqa: E731
    return Parties(client("social-work"), client("rehab-facility"), client("third-sector"), client("carer-portal"), client("ig-officer"))


@pytest.fixture
def receivers(gateway: Gateway, server, parties: Parties) -> Iterator[dict[str, Receiver]]:  # type: ignore[no-untyped-def]
    """Webhook endpoints for the key worker's system (HSCP), the facility and the carers' centre."""
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    endpoints = {recipient: Receiver(jwks) for recipient in (HSCP, FACILITY, CARERS_CENTRE)}
    with gateway.transaction() as session:
        sync_subscriptions(
            session,
            [
                (HSCP, endpoints[HSCP].url, ["referral", "task-status", "review", "contingency-alert"]),
                (FACILITY, endpoints[FACILITY].url, ["facility-referral", "task-status", "withdrawal-notice"]),
                (CARERS_CENTRE, endpoints[CARERS_CENTRE].url, ["review-summary", "contingency-alert", "withdrawal-notice"]),
            ],
        )
    yield endpoints
    for endpoint in endpoints.values():
        endpoint.close()


@pytest.fixture
def worker(gateway: Gateway, app) -> Iterator[DeliveryWorker]:  # type: ignore[no-untyped-def]
    """A delivery worker sending in the background with the app's consent policy and short backoff."""
    sender = DeliveryWorker(gateway, app.state.fhir.policy, settings=FAST, threads=4, idle_sleep=0.02)
    sender.start()
    yield sender
    sender.close()


# --- small steps of the walk ------------------------------------------------------------------


def created(client: PathwayClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(resource["resourceType"], resource)
    assert response.status_code == 201, response.text
    return response.json()


def found(client: PathwayClient, query: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The resources a search returns (the withheld warning left out)."""
    response = client.get(query, **kwargs)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"]


def labels(resource: dict[str, Any]) -> tuple[set[str], set[str]]:
    meta = resource.get("meta", {})
    return {t["code"] for t in meta.get("tag", []) if t["system"] == CATEGORY_SYSTEM}, {s["code"] for s in meta.get("security", [])}


def records_of_ann(social: PathwayClient, patient: str) -> dict[str, str]:
    """Ann's carer, her OST prescribing and a mental-health problem, held by the HSCP; coded so the
    labelling rules mark them prescribing/substance-use and mental-health (PSY)."""
    carer = created(social, {"resourceType": "RelatedPerson", "patient": {"reference": patient}, "name": [{"family": "Reid", "given": ["Jean"]}], "relationship": [{"text": "sister"}]})
    methadone = created(
        social,
        {
            "resourceType": "MedicationStatement",
            "status": "active",
            "subject": {"reference": patient},
            "medicationCodeableConcept": {"text": "Methadone 1mg/ml oral solution sugar free"},
            "dosage": [{"text": "60 ml daily, supervised"}],
        },
    )
    depression = created(
        social,
        {
            "resourceType": "Condition",
            "subject": {"reference": patient},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": "35489007", "display": "Depressive disorder"}]},
        },
    )
    assert labels(methadone) == ({"prescribing", "substance-use"}, {"OPIOIDUD", "SUD", "N"})
    assert labels(depression)[0] == {"mental-health"} and "PSY" in labels(depression)[1]
    return {"carer": f"RelatedPerson/{carer['id']}", "methadone": methadone["id"], "depression": depression["id"]}


def consent_of_ann(social: PathwayClient, patient: str, carer: str) -> dict[str, Any]:
    """Ann shares with her key worker's team and the facility (never her mental health with the
    facility), and lets her sister hear how the pathway is going, for carer support only."""
    actor = lambda system, value: [{"role": {"text": "recipient"}, "reference": {"identifier": {"system": system, "value": value}}}]  # noqa: E731
    return created(
        social,
        privacy_consent(
            patient,
            {
                "type": "deny",
                "provision": [
                    {"type": "permit", "actor": actor(ODS, "S037")},
                    {
                        "type": "permit",
                        "actor": actor(PARTNER, "rehab-tayview-house"),
                        "provision": [{"type": "deny", "securityLabel": [{"system": SENSITIVITY_SYSTEM, "code": "PSY"}]}],
                    },
                    {
                        "type": "permit",
                        "actor": [{"role": {"text": "carer"}, "reference": {"reference": carer}}],
                        "purpose": [{"system": "https://pathway.scot/CodeSystem/purpose", "code": "carer-support"}],
                        "code": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "pathway-progress"}]}],
                    },
                ],
            },
        ),
    )


def queued(gateway: Gateway, recipient: str) -> dict[str, str]:
    """Delivery id -> event of what the outbox holds for ``recipient`` (the id is X-Pathway-Delivery)."""
    with gateway.reading() as session:
        rows = session.scalars(select(DeliveryRow).where(DeliveryRow.recipient == recipient))
        return {row.id: row.event for row in rows}


def topics(endpoint: Receiver) -> dict[str, str]:
    """Delivery id -> event, from the signed bundles the receiver accepted."""
    events = {}
    for key, bundle in list(endpoint.accepted.items()):
        status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
        events[key] = status["topic"]["valueCanonical"].removeprefix(TOPIC_BASE)
    return events


def wait_for(endpoint: Receiver, event: str, seconds: float = ALERT_WAIT_SECONDS) -> tuple[str, dict[str, Any]]:
    """The first signed delivery of ``event`` the receiver accepts within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, topic in topics(endpoint).items():
            if topic == event:
                return key, endpoint.accepted[key]
        time.sleep(0.02)
    raise AssertionError(f"no {event} delivery within {seconds:g} s; received {sorted(topics(endpoint).values())}")


@pytest.fixture
def ann(parties: Parties) -> dict[str, Any]:
    """Ann (held by the HSCP), her records, her carer and her consent."""
    patient = person(parties.social, 31)
    records = records_of_ann(parties.social, patient)
    return {"patient": patient, **records, "consent": consent_of_ann(parties.social, patient, records["carer"])}


def acting_for(carer: str) -> dict[str, Any]:
    """Request options for the carers' portal acting for ``carer`` (purpose carer-support)."""
    return {"headers": {"X-Pathway-Acting-For": carer, "X-Pathway-Purpose": "carer-support"}}


# --- the walk ---------------------------------------------------------------------------------


def test_two_people_through_the_pathway_with_five_parties(  # type: ignore[no-untyped-def]
    gateway: Gateway, parties: Parties, ann, receivers: dict[str, Receiver], worker: DeliveryWorker
) -> None:
    started = time.monotonic()
    social, facility, patient = parties.social, parties.facility, ann["patient"]

    # Referral opens the pathway; the resource allocation says yes; preparation leads to the facility referral.
    referral = refer(social, patient, "REF-E2E-0001")
    pathway_task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    assert (pathway_task["status"], pathway_task["businessStatus"]["coding"][0]["code"]) == ("requested", "referral")
    residential = to_residential(social, referral)
    assert residential["businessStatus"]["coding"][0]["code"] == "residential"
    assert residential["output"][0]["type"]["text"] == "resource-allocation-decision"

    # The facility pulls its Task and reads the package: prescribing yes, the mental-health entry no.
    stay = one(facility, "Task?owner=Organization/rehab-tayview-house&status=requested")
    assert stay["partOf"] == [{"reference": f"Task/{pathway_task['id']}"}]
    package = facility.get(f"Task/{stay['id']}/$package")
    assert package.status_code == 200, package.text
    entries = [e["resource"] for e in package.json()["entry"]]
    shown = {f"{r['resourceType']}/{r.get('id')}" for r in entries}
    assert f"MedicationStatement/{ann['methadone']}" in shown and patient in shown
    assert f"Condition/{ann['depression']}" not in shown
    assert entries[-1]["resourceType"] == "OperationOutcome"
    assert entries[-1]["issue"][0]["diagnostics"] == "some information withheld"
    assert facility.get(f"Condition/{ann['depression']}").status_code == 404

    # Accepted and admitted, then two client-led reviews.
    admitted = date.today() - timedelta(weeks=9)
    in_stay = admit(facility, admitted.isoformat())
    assert (in_stay["status"], in_stay["executionPeriod"]["start"]) == ("in-progress", admitted.isoformat())
    readings = [
        star(facility, stay["focus"]["reference"], {"drug-use": 5, "alcohol-use": 4, "emotional-health": 4}, (admitted + timedelta(weeks=4)).isoformat()),
        star(facility, stay["focus"]["reference"], {"drug-use": 7, "alcohol-use": 6, "emotional-health": 6}, (admitted + timedelta(weeks=8)).isoformat()),
    ]
    assert [r.status_code for r in readings] == [201, 201], [r.text for r in readings]

    # The carer, through the carers' portal: the carer-safe summaries and the stage, nothing clinical.
    as_carer = acting_for(ann["carer"])
    portal = parties.carer_portal
    summaries = found(portal, "Communication?category=review-summary", **as_carer)
    assert len(summaries) == 2
    for summary in summaries:
        text = [p["contentString"] for p in summary["payload"]]
        assert text[0].startswith("Review held on") and text[1] == "Attended: yes" and text[2].startswith("Next review: ")
        assert "cravings" not in str(summary) and "drug-use" not in str(summary)
    [episode] = found(portal, f"EpisodeOfCare?patient={patient}", **as_carer)
    assert episode["extension"][0]["valueCoding"]["code"] == "residential"
    assert portal.get(f"QuestionnaireResponse/{readings[0].json()['id']}", **as_carer).status_code == 404
    assert found(portal, f"Observation?patient={patient}", **as_carer) == []
    assert found(portal, f"Encounter?patient={patient}", **as_carer) == []
    assert portal.get(f"MedicationStatement/{ann['methadone']}", **as_carer).status_code == 404
    assert portal.get(f"Condition/{ann['depression']}", **as_carer).status_code == 404
    assert portal.get(f"EpisodeOfCare/{episode['id']}").status_code == 400  # a portal must say whom it acts for

    # Early exit: the key worker's system receives the signed contingency alert within the wait.
    exited = move(facility, stay["id"], status="failed", statusReason=EARLY_EXIT, executionPeriod={"start": admitted.isoformat(), "end": date.today().isoformat()})
    assert exited.status_code == 200, exited.text
    alert_key, alert_bundle = wait_for(receivers[HSCP], "contingency-alert")
    [alert] = [e["resource"] for e in alert_bundle["entry"][1:]]
    assert alert["resourceType"] == "Communication" and alert["priority"] == "urgent"
    assert {"reference": "PractitionerRole/kw-sarah-mcintyre"} in alert["recipient"]
    assert "naloxone" in alert["payload"][1]["contentString"]
    assert queued(gateway, HSCP)[alert_key] == "contingency-alert"
    assert social.get(f"Task/{pathway_task['id']}").json()["businessStatus"]["coding"][0]["code"] == "community-recovery"
    # the full alert carries the contingency plan (substance use): not hers; her carer-safe alert is
    carer_sees = found(portal, f"Communication?patient={patient}", **as_carer)
    carer_alerts = [c for c in carer_sees if c["id"] not in {s["id"] for s in summaries}]
    assert {s["id"] for s in summaries} <= {c["id"] for c in carer_sees} and alert["id"] not in {c["id"] for c in carer_sees}
    assert len(carer_alerts) == 1 and carer_alerts[0]["priority"] == "urgent" and "naloxone" not in str(carer_alerts[0]["payload"])

    # Every push was signed with the published key, and each receiver got what the outbox queued for it.
    wait_for(receivers[CARERS_CENTRE], "review-summary")
    for recipient, endpoint in receivers.items():
        assert endpoint.bad_signatures == 0 and set(endpoint.posts.values()) == {1}
        assert topics(endpoint).items() <= queued(gateway, recipient).items(), recipient
    assert {"referral", "task-status", "review", "contingency-alert"} <= set(topics(receivers[HSCP]).values())
    assert "facility-referral" in topics(receivers[FACILITY]).values()

    # A second person: the allocation says no; the third sector finds its community referral. She
    # consents to the agency, whose agreement covers care management (CAREMGT), not treatment.
    second = person(social, 32)
    consent_for(social, second, f"{PARTNER}|tayside-recovery-network")
    second_referral = refer(social, second, "REF-E2E-0002")
    second_task = one(social, f"Task?focus=ServiceRequest/{second_referral['id']}")
    moved(social, second_task["id"], stage="initial-meeting", status="accepted")
    moved(social, second_task["id"], stage="resource-allocation", status="in-progress")
    assert decide(social, second_referral, "no").status_code == 201
    moved(social, second_task["id"], stage="alternative-pathway")
    caremgt = {"headers": {"X-Pathway-Purpose": "CAREMGT"}}
    community = one(parties.agency, f"Task?owner=Organization/tayside-recovery-network&status=requested&part-of=Task/{second_task['id']}", **caremgt)
    assert community["description"].startswith("Community recovery support") and SUBSETTED not in community["meta"].get("tag", [])
    request = parties.agency.get(community["focus"]["reference"], **caremgt).json()
    assert request["category"][0]["coding"][0]["code"] == "community-referral"
    assert request["basedOn"] == [{"reference": f"ServiceRequest/{second_referral['id']}"}]
    # asking for treatment, which its agreement does not cover, it sees the workflow skeleton only
    treat = parties.agency.get(f"Task/{community['id']}", headers={"X-Pathway-Purpose": "TREAT"}).json()
    assert SUBSETTED in treat["meta"]["tag"] and "description" not in treat and treat["status"] == "requested"

    # The IG officer reads the ledger: the facility's disclosures name the agreement and Ann's consent.
    ledger_url = f"{social.fhir_base.removesuffix('/fhir')}/disclosures?patient={patient}"
    ledger = parties.ig_officer.get(ledger_url)
    assert ledger.status_code == 200, ledger.text
    to_facility = [d for d in ledger.json()["disclosures"] if d["recipient"] == FACILITY]
    assert to_facility
    disclosed = {ref.rsplit("/_history/", 1)[0] for d in to_facility for ref in d["resources"]}
    assert f"MedicationStatement/{ann['methadone']}" in disclosed and f"Condition/{ann['depression']}" not in disclosed
    for entry in to_facility:
        assert entry["agreements"] and all(a.startswith("isa-dhscp-tayview@") for a in entry["agreements"])
        assert entry["consents"] == [f"Consent/{ann['consent']['id']}"]
    assert facility.get(ledger_url).status_code == 403
    assert time.monotonic() - started < 30


def test_carer_portal_cannot_read_the_referral_reasons_or_the_plan(parties: Parties, ann) -> None:  # type: ignore[no-untyped-def]
    referral = refer(parties.social, ann["patient"], "REF-E2E-0003")
    plan = one(parties.social, f"CarePlan?identifier={REFERRAL_SYSTEM}|REF-E2E-0003")
    as_carer = acting_for(ann["carer"])
    assert parties.carer_portal.get(f"ServiceRequest/{referral['id']}", **as_carer).status_code == 404
    assert parties.carer_portal.get(f"CarePlan/{plan['id']}", **as_carer).status_code == 404


def test_a_newly_imported_pathway_yaml_applies_to_the_next_write(gateway: Gateway, parties: Parties) -> None:
    with gateway.reading() as session:
        assert load_pathway_conf(session).review_interval_weeks == 4
    changed = (REPO / "conf" / "pathway.yaml").read_text().replace("review_interval_weeks: 4", "review_interval_weeks: 6")
    with gateway.transaction() as session:
        session.add(ConfDocumentRow(name="pathway.yaml", version=2, sha256="changed", body=changed, loaded=now_utc()))
    with gateway.reading() as session:
        assert load_pathway_conf(session).review_interval_weeks == 6
