"""Issue 14's "must show": partners' own topic-based Subscriptions over /fhir with a stock client
(fhirpy), a receiver on 127.0.0.1 that checks every signature, handshake, heartbeat, notification,
a missed event recovered with $events, and a partner that tries to follow someone else's patient.

Time is simulated: the worker's clock is moved on instead of sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.subscription import Subscription
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, OperationOutcome, ResourceNotFound
from sqlalchemy import select

from gateway.conf import Delivery
from gateway.delivery import sync_subscriptions
from gateway.delivery.models import DeliveryRow, SubscriptionRow
from gateway.delivery.subscriptions import FILTER_CRITERIA, HEARTBEAT_PERIOD, PAYLOAD_CONTENT
from gateway.delivery.topics import TOPIC_BASE
from gateway.delivery.worker import DeliveryWorker
from gateway.runtime import Gateway
from tests.conftest import FACILITY, PARTNER, Clock
from tests.test_delivery import Receiver
from tests.test_pathway_api import one, person, refer, to_residential
from tests.test_pathway_e2e import Parties, conf, conf_client, consent_of_ann, parties, records_of_ann  # noqa: F401  (fixtures)

# Retries as shipped (72 hours), with a short lease: the worker's clock is simulated.
SETTINGS = Delivery(base_delay_seconds=2, max_delay_seconds=3600, retry_for_hours=72, error_after_hours=24, timeout_seconds=2, lease_seconds=30)
LOMOND = f"{PARTNER}|rehab-lomond-brae"


@pytest.fixture
def quiet(gateway: Gateway, parties: Parties) -> Parties:  # noqa: F811
    """The demo partnership without the webhooks conf/partners.yaml names (*.example hosts):
    partners subscribe themselves here."""
    with gateway.transaction() as session:
        sync_subscriptions(session, [])
    return parties


@pytest.fixture
def jwks(server: Any) -> dict[str, Any]:
    return httpx.get(f"{server.url}/.well-known/jwks.json").json()


@pytest.fixture
def inbox(jwks: dict[str, Any]) -> Iterator[Receiver]:
    """The facility's endpoint; ``inbox.behaviour`` decides its answers (503 while it is down)."""
    receiver = Receiver(jwks)
    yield receiver
    receiver.close()


@pytest.fixture
def worker(gateway: Gateway, app: Any, clock: Clock) -> Iterator[DeliveryWorker]:
    sender = DeliveryWorker(gateway, app.state.fhir.policy, settings=SETTINGS, threads=2, clock=clock)
    yield sender
    sender.close()


def fhirpy(server: Any, client: Any) -> SyncFHIRClient:
    """A stock fhirpy client with the partner's bearer token (fetched by its own key)."""
    return SyncFHIRClient(f"{server.url}/fhir", authorization=f"Bearer {client.token()}", requests_config={"timeout": 10})


def subscription(endpoint: str, topic: str, *, content: str = "full-resource", heartbeat: int | None = None, criteria: str | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]},
    }
    if heartbeat is not None:
        channel["extension"] = [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat}]
    body: dict[str, Any] = {"status": "requested", "reason": "Referrals for Tayview House", "criteria": TOPIC_BASE + topic, "channel": channel}
    if criteria:
        body["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": criteria}]}
    return body


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    """The Backport status Parameters (first entry) as name -> parameter (events as a list)."""
    params: dict[str, Any] = {"notification-event": []}
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            params["notification-event"].append({part["name"]: part for part in p["part"]})
        else:
            params[p["name"]] = p
    return params


def received(inbox: Receiver, kind: str) -> list[dict[str, Any]]:
    return [b for b in inbox.accepted.values() if status_of(b)["type"]["valueCode"] == kind]


def referred_to_tayview(social: Any, serial: int, referral_id: str) -> str:
    """A person referred and moved to residential with Tayview House: its facility Task reference."""
    patient = person(social, serial)
    to_residential(social, refer(social, patient, referral_id))
    task = one(social, f"Task?owner=Organization/rehab-tayview-house&status=requested&patient={patient}")
    return f"Task/{task['id']}"


def test_a_partner_subscribes_with_fhirpy_and_recovers_a_missed_event_with_events(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, quiet: Parties, inbox: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    facility = fhirpy(server, quiet.facility)
    created = facility.resource("Subscription", **subscription(inbox.url, "facility-referral", heartbeat=60))
    created.save()
    Subscription.model_validate(created.serialize())
    assert created["status"] == "requested"

    # the handshake activates it
    assert worker.run_once() == 1
    [handshake] = received(inbox, "handshake")
    Bundle.model_validate(handshake)
    assert status_of(handshake)["subscription"]["valueReference"]["reference"] == f"Subscription/{created.id}"
    assert status_of(handshake)["events-since-subscription-start"]["valueString"] == "0"
    assert facility.reference("Subscription", created.id).to_resource()["status"] == "active"

    # nothing for 60 simulated seconds: a heartbeat
    clock.advance(seconds=59)
    worker.sweep()
    assert worker.run_once() == 0
    clock.advance(seconds=2)
    worker.sweep()
    assert worker.run_once() == 1
    assert len(received(inbox, "heartbeat")) == 1

    # a referral reaches the facility as event 1, with the Task it may see
    first_task = referred_to_tayview(quiet.social, 41, "REF-SUB-0001")
    assert worker.run_once() == 1
    [notification] = received(inbox, "event-notification")
    Bundle.model_validate(notification)
    status = status_of(notification)
    assert status["topic"]["valueCanonical"] == TOPIC_BASE + "facility-referral"
    assert status["events-since-subscription-start"]["valueString"] == "1"
    [event] = status["notification-event"]
    assert event["event-number"]["valueString"] == "1"
    assert event["focus"]["valueReference"]["reference"] == first_task
    assert [e["request"]["url"] for e in notification["entry"][1:]] == [first_task, event["additional-context"]["valueReference"]["reference"]]

    # the receiver goes down: event 2 is not received
    inbox.behaviour = lambda _key: 503
    second_task = referred_to_tayview(quiet.social, 42, "REF-SUB-0002")
    assert worker.run_once() == 1
    assert len(received(inbox, "event-notification")) == 1
    with gateway.reading() as session:
        missed = session.scalars(select(DeliveryRow).where(DeliveryRow.event == "facility-referral", DeliveryRow.event_number == 2)).one()
    assert (missed.status, missed.attempts) == ("pending", 1)

    # $status says so, and $events gives event 2 back
    [status_entry] = facility.reference("Subscription", created.id).to_resource().execute("$status", method="get")["entry"]
    assert {p["name"]: p for p in status_entry["resource"]["parameter"]}["events-since-subscription-start"]["valueString"] == "2"
    replay = facility.reference("Subscription", created.id).to_resource().execute("$events", method="get", params={"eventsSinceNumber": 2})
    Bundle.model_validate(replay)
    replayed = status_of(replay)
    assert replayed["type"]["valueCode"] == "query-event"
    assert [e["event-number"]["valueString"] for e in replayed["notification-event"]] == ["2"]
    assert replayed["notification-event"][0]["focus"]["valueReference"]["reference"] == second_task
    assert second_task in [e["request"]["url"] for e in replay["entry"][1:]]

    # the policy is asked again at replay: a Task re-assigned to another facility is left out
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        stored = repo.read("Task", first_task.split("/")[1])
        task = stored.resource
        task["owner"] = {"reference": "Organization/rehab-lomond-brae"}
        repo.update(task, stored.custodian)
    both = facility.reference("Subscription", created.id).to_resource().execute("$events", method="get", params={"eventsSinceNumber": 1, "eventsUntilNumber": 2})
    assert [e["event-number"]["valueString"] for e in status_of(both)["notification-event"]] == ["2"]
    assert first_task not in str(both)


def test_id_only_content_sends_references_not_resources(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, quiet: Parties, inbox: Receiver, worker: DeliveryWorker
) -> None:
    facility = fhirpy(server, quiet.facility)
    facility.resource("Subscription", **subscription(inbox.url, "facility-referral", content="id-only")).save()
    worker.run_once()
    task = referred_to_tayview(quiet.social, 43, "REF-SUB-0003")
    worker.run_once()
    [notification] = received(inbox, "event-notification")
    assert len(notification["entry"]) == 1
    assert status_of(notification)["notification-event"][0]["focus"]["valueReference"]["reference"] == task


def test_a_patient_filter_narrows_a_subscription_to_that_person(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, quiet: Parties, inbox: Receiver, worker: DeliveryWorker
) -> None:
    social = quiet.social
    ann = person(social, 62)
    consent_of_ann(social, ann, records_of_ann(social, ann)["carer"])  # she lets the facility see her record
    assert quiet.facility.get(ann).status_code == 200
    fhirpy(server, quiet.facility).resource("Subscription", **subscription(inbox.url, "facility-referral", criteria=f"Task?patient={ann}")).save()
    worker.run_once()
    to_residential(social, refer(social, ann, "REF-SUB-0062"))
    to_residential(social, refer(social, person(social, 63), "REF-SUB-0063"))  # someone else
    worker.run_once()
    [only] = received(inbox, "event-notification")
    focus = status_of(only)["notification-event"][0]["focus"]["valueReference"]["reference"]
    assert social.get(focus).json()["for"]["reference"] == ann
    assert status_of(only)["events-since-subscription-start"]["valueString"] == "1"


def test_a_partner_cannot_follow_or_touch_what_is_not_its_own(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, make_client, conf, quiet: Parties, inbox: Receiver, jwks, worker: DeliveryWorker  # noqa: F811
) -> None:
    facility = fhirpy(server, quiet.facility)
    own = facility.resource("Subscription", **subscription(inbox.url, "facility-referral"))
    own.save()
    worker.run_once()
    patient = person(quiet.social, 44)
    to_residential(quiet.social, refer(quiet.social, patient, "REF-SUB-0004"))

    attacker = conf_client(make_client, conf, "rehab-facility-2")  # Lomond Brae: another facility
    thief = Receiver(jwks)
    try:
        lomond = fhirpy(server, attacker)
        # following Tayview's patient: refused, whether or not the person exists
        with pytest.raises(ForbiddenError) as refused:
            lomond.resource("Subscription", **subscription(thief.url, "facility-referral", criteria=f"Task?patient={patient}")).save()
        assert "may not see" in str(refused.value)
        with pytest.raises(ForbiddenError) as no_one:
            lomond.resource("Subscription", **subscription(thief.url, "facility-referral", criteria="Task?patient=Patient/no-such-person")).save()
        assert str(no_one.value).replace("Patient/no-such-person", patient) == str(refused.value)
        # Tayview's subscription is invisible to it: read, update, delete and $events are 404
        with pytest.raises(ResourceNotFound):
            lomond.reference("Subscription", own.id).to_resource()
        for method, path in [("get", f"Subscription/{own.id}/$events"), ("delete", f"Subscription/{own.id}"), ("get", f"Subscription/{own.id}/$status")]:
            assert attacker.request(method.upper(), path).status_code == 404
        stolen = subscription(thief.url, "facility-referral")
        assert attacker.put(f"Subscription/{own.id}", {"resourceType": "Subscription", "id": own.id, **stolen}).status_code == 404
        assert [e["resource"]["id"] for e in attacker.get("Subscription").json()["entry"]] == []
        # a topic subscription of its own brings it nothing about Tayview's people
        lomond.resource("Subscription", **subscription(thief.url, "facility-referral")).save()
        worker.run_once()
        to_residential(quiet.social, refer(quiet.social, person(quiet.social, 45), "REF-SUB-0005"))
        worker.run_once()
        assert [status_of(b)["type"]["valueCode"] for b in thief.accepted.values()] == ["handshake"]
        assert len(received(inbox, "event-notification")) == 2
    finally:
        thief.close()
    # a topic whose resources its scopes do not allow, and one not ours
    narrow = fhirpy(server, make_client("tayview-tasks-only", FACILITY, ["system/Task.read", "system/Subscription.cruds"]))
    with pytest.raises(ForbiddenError) as no_scope:
        narrow.resource("Subscription", **subscription(thief.url, "review")).save()
    assert "scopes" in str(no_scope.value)
    with pytest.raises(OperationOutcome) as unknown:
        facility.resource("Subscription", **{**subscription(inbox.url, "facility-referral"), "criteria": "Task?status=requested"}).save()
    assert TOPIC_BASE in str(unknown.value)


def test_subscription_updates_and_deletes_are_the_owners(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, quiet: Parties, inbox: Receiver, jwks, worker: DeliveryWorker
) -> None:
    facility = fhirpy(server, quiet.facility)
    own = facility.resource("Subscription", **subscription(inbox.url, "facility-referral"))
    own.save()
    worker.run_once()
    assert facility.reference("Subscription", own.id).to_resource()["status"] == "active"
    # a new endpoint asks for a new handshake there
    moved_to = Receiver(jwks)
    try:
        own["channel"]["endpoint"] = moved_to.url
        own.save()
        assert own["status"] == "requested" and own["meta"]["versionId"] == "2"
        worker.run_once()
        assert len(received(moved_to, "handshake")) == 1
        own["status"] = "off"
        own.save()
        referred_to_tayview(quiet.social, 46, "REF-SUB-0006")
        assert worker.run_once() == 0  # off: nothing queued
    finally:
        moved_to.close()
    own.delete()
    with pytest.raises(ResourceNotFound):
        facility.reference("Subscription", own.id).to_resource()
    with gateway.reading() as session:
        assert session.get(SubscriptionRow, own.id) is None


def test_the_capability_statement_lists_subscription_and_its_operations(server) -> None:  # type: ignore[no-untyped-def]
    statement = httpx.get(f"{server.url}/fhir/metadata").json()
    CapabilityStatement.model_validate(statement)
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    subscription_entry = types["Subscription"]
    assert [o["name"] for o in subscription_entry["operation"]] == ["status", "events"]
    assert {i["code"] for i in subscription_entry["interaction"]} == {"read", "create", "update", "delete", "search-type"}


def test_conf_subscriptions_show_as_the_partners_subscriptions_and_stay_the_operators(server, parties: Parties) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    facility = fhirpy(server, parties.facility)
    configured = facility.resources("Subscription").fetch_all()
    assert sorted(s["criteria"] for s in configured) == sorted(TOPIC_BASE + e for e in ("facility-referral", "task-status", "withdrawal-notice"))
    assert {s["status"] for s in configured} == {"active"}
    assert {s["channel"]["endpoint"] for s in configured} == {"https://gateway.tayview-house.example/pathway/inbox"}
    for resource in configured:
        Subscription.model_validate(resource.serialize())
    with pytest.raises(ForbiddenError) as refused:
        configured[0].delete()
    assert "conf/partners.yaml" in str(refused.value)


def test_conf_load_refuses_a_webhook_a_partner_already_subscribed_itself(  # type: ignore[no-untyped-def]
    gateway: Gateway, server, quiet: Parties, inbox: Receiver, conf  # noqa: F811
) -> None:
    from gateway.delivery.outbox import DeliveryConfigError
    from gateway.directory import import_conf
    from tests.conftest import REPO

    fhirpy(server, quiet.facility).resource("Subscription", **subscription(inbox.url, "facility-referral")).save()
    tayview = conf.organization("rehab-tayview-house")
    moved = tayview.model_copy(update={"webhook": tayview.webhook.model_copy(update={"url": inbox.url})})
    clash = type(conf)(tuple(moved if o.id == tayview.id else o for o in conf.organizations), conf.people, conf.agreements, conf.pathway)
    with pytest.raises(DeliveryConfigError, match="already has its own Subscription/"):
        import_conf(gateway, clash, REPO / "conf")
