"""Workflow records a partner sees only because they name it: in full with agreement AND consent,
else as a skeleton (SUBSETTED, nothing clinical) while open and an agreement is in force, else not
at all. Over real HTTP with the demo partnership's configuration and its real partner clients."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

from gateway.client import PathwayClient
from gateway.delivery.topics import TOPIC_BASE
from gateway.runtime import Gateway
from gateway.sharing.agreement_lifecycle import set_status
from gateway.store.models import DisclosureRow
from tests.conftest import FACILITY, PARTNER, privacy_consent
from tests.test_pathway_e2e import Parties, ann, conf, created, parties  # noqa: F401  (fixtures)
from tests.test_pathway_api import one, person, refer, to_residential
from tests.test_subscriptions import inbox, jwks, quiet, worker  # noqa: F401  (fixtures)

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
# What the facility sees of its Task and of the facility referral without consent, by hand.
TASK_SKELETON = {"resourceType", "id", "meta", "status", "intent", "code", "focus", "for", "partOf", "authoredOn", "lastModified", "requester", "owner"}
REQUEST_SKELETON = {"resourceType", "id", "meta", "status", "intent", "category", "subject", "requester", "performer", "basedOn", "authoredOn"}
TASK_NOTE = [{"text": "Relapsed twice on methadone; overdose in March"}]
TASK_INPUT = [{"type": {"text": "risk"}, "valueString": "Overdose history, lives alone"}]
REASON = [{"text": "Alcohol and opioid dependence"}]
FACILITY_TASKS = "Task?owner=Organization/rehab-tayview-house"


def put(client: PathwayClient, resource: dict[str, Any]) -> dict[str, Any]:
    current = client.get(f"{resource['resourceType']}/{resource['id']}")
    response = client.put(f"{resource['resourceType']}/{resource['id']}", resource, headers={"If-Match": current.headers["ETag"]})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def referral(parties: Parties, ann: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """Ann referred to Tayview House; the HSCP (which holds both) records clinical detail on the
    facility Task (note, input) and the facility referral (reasonCode, note)."""
    social = parties.social
    to_residential(social, refer(social, ann["patient"], "REF-SKEL-0001"))
    task = one(social, f"{FACILITY_TASKS}&patient={ann['patient']}")
    task = put(social, task | {"note": TASK_NOTE, "input": TASK_INPUT})
    request = social.get(task["focus"]["reference"]).json()
    request = put(social, request | {"reasonCode": REASON, "note": TASK_NOTE})
    assert request["supportingInfo"]  # the care plan, from the pathway
    return {"task": task, "request": request, "patient": ann["patient"], "consent": ann["consent"]}


def withdraw(parties: Parties, consent: dict[str, Any]) -> None:
    current = parties.social.get(f"Consent/{consent['id']}").json()
    put(parties.social, current | {"status": "inactive"})


def suspend_tayview(gateway: Gateway) -> None:
    with gateway.transaction() as session:
        set_status(session, "isa-dhscp-tayview", "suspended", reason="data breach under investigation", by="test")


def tags(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return resource.get("meta", {}).get("tag", [])


def assert_skeleton(resource: dict[str, Any], keys: set[str]) -> None:
    assert set(resource) == keys, sorted(set(resource) ^ keys)
    assert SUBSETTED in tags(resource)
    for hidden in ("reasonCode", "note", "input", "supportingInfo", "description"):
        assert hidden not in resource
    assert "security" not in resource["meta"] and tags(resource) == [SUBSETTED]  # labels say what kind of data was left out


def assert_full(resource: dict[str, Any]) -> None:
    assert SUBSETTED not in tags(resource)
    assert resource.get("note") == TASK_NOTE


def disclosed_to_facility(gateway: Gateway, reference: str) -> int:
    with gateway.reading() as session:
        rows = session.scalars(select(DisclosureRow).where(DisclosureRow.recipient == FACILITY)).all()
    return sum(any(r.startswith(reference + "/") for r in orjson.loads(row.resources)) for row in rows)


def test_with_consent_and_agreement_the_facility_reads_task_and_referral_in_full(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    facility = parties.facility
    task = facility.get(f"Task/{referral['task']['id']}")
    assert task.status_code == 200, task.text
    assert_full(task.json())
    assert task.json()["input"] == TASK_INPUT and task.json()["description"]
    request = facility.get(referral["task"]["focus"]["reference"]).json()
    assert_full(request)
    assert request["reasonCode"] == REASON and request["supportingInfo"]
    # the full view is a disclosure, recorded like any other
    assert disclosed_to_facility(gateway, f"Task/{referral['task']['id']}") >= 1
    assert disclosed_to_facility(gateway, referral["task"]["focus"]["reference"]) >= 1


def test_after_withdrawal_the_facility_sees_only_the_skeleton(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    withdraw(parties, referral["consent"])
    facility, task_ref, request_ref = parties.facility, f"Task/{referral['task']['id']}", referral["task"]["focus"]["reference"]
    before = disclosed_to_facility(gateway, task_ref)
    assert_skeleton(facility.get(task_ref).json(), TASK_SKELETON)
    assert_skeleton(facility.get(request_ref).json(), REQUEST_SKELETON)
    # the references keep no display or identifier of the person
    assert facility.get(task_ref).json()["for"] == {"reference": referral["patient"]}
    # search, vread and history give the same skeleton, never a version in full
    [found] = [e["resource"] for e in facility.get(f"{FACILITY_TASKS}&patient={referral['patient']}").json()["entry"] if e["resource"]["resourceType"] == "Task"]
    assert_skeleton(found, TASK_SKELETON)
    version = referral["task"]["meta"]["versionId"]
    assert_skeleton(facility.get(f"{task_ref}/_history/{version}").json(), TASK_SKELETON)
    history = facility.get(f"{task_ref}/_history").json()["entry"]
    assert history and all(SUBSETTED in tags(e["resource"]) and "note" not in e["resource"] for e in history)
    # _elements cannot ask for a hidden element back, and the skeleton stays marked once
    [narrowed] = [e["resource"] for e in facility.get(f"Task?_id={referral['task']['id']}&_elements=status,note").json()["entry"] if e["resource"]["resourceType"] == "Task"]
    assert "note" not in narrowed and narrowed["status"] == "requested" and tags(narrowed) == [SUBSETTED]
    # the skeleton is not a disclosure; the custodian still reads it all
    assert disclosed_to_facility(gateway, task_ref) == before
    assert parties.social.get(task_ref).json()["note"] == TASK_NOTE


def test_after_the_agreement_is_suspended_the_facility_sees_nothing(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    suspend_tayview(gateway)
    facility, task_ref, request_ref = parties.facility, f"Task/{referral['task']['id']}", referral["task"]["focus"]["reference"]
    assert facility.get(task_ref).status_code == 404
    assert facility.get(request_ref).status_code == 404
    assert facility.get(f"{task_ref}/_history").status_code == 404
    search = facility.get(f"{FACILITY_TASKS}&patient={referral['patient']}").json()
    assert [e["resource"]["resourceType"] for e in search.get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"] == []
    # and a skeleton PUT is not possible either: it may not know the Task
    assert facility.put(task_ref, {"resourceType": "Task", "id": referral["task"]["id"], "status": "received", "intent": "order"}).status_code == 404


def test_a_closed_task_without_consent_is_not_shown_at_all(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    task = parties.social.get(f"Task/{referral['task']['id']}").json()
    put(parties.social, task | {"status": "cancelled"})
    withdraw(parties, referral["consent"])
    assert parties.facility.get(f"Task/{task['id']}").status_code == 404
    search = parties.facility.get(f"{FACILITY_TASKS}&patient={referral['patient']}").json()
    assert [e for e in search.get("entry", []) if e["resource"]["resourceType"] == "Task"] == []
    # the referral is still open: its skeleton remains while the agreement is in force
    assert_skeleton(parties.facility.get(referral["task"]["focus"]["reference"]).json(), REQUEST_SKELETON)


def test_events_replay_after_withdrawal_gives_the_skeleton_only(  # type: ignore[no-untyped-def]
    gateway: Gateway, quiet: Parties, ann, inbox, worker  # noqa: F811
) -> None:
    channel = {"type": "rest-hook", "endpoint": inbox.url, "payload": "application/fhir+json"}
    body = {"resourceType": "Subscription", "status": "requested", "reason": "Referrals", "criteria": TOPIC_BASE + "facility-referral", "channel": channel}
    created = quiet.facility.post("Subscription", body)
    assert created.status_code == 201, created.text
    assert worker.run_once() == 1  # the handshake
    social = quiet.social
    to_residential(social, refer(social, ann["patient"], "REF-SKEL-0002"))
    task = one(social, f"{FACILITY_TASKS}&patient={ann['patient']}")
    put(social, task | {"note": TASK_NOTE, "input": TASK_INPUT})
    events = f"Subscription/{created.json()['id']}/$events"

    def replayed() -> dict[str, dict[str, Any]]:
        response = quiet.facility.get(events)
        assert response.status_code == 200, response.text
        return {e["resource"]["resourceType"]: e["resource"] for e in response.json()["entry"][1:]}

    assert_full(replayed()["Task"])
    withdraw(quiet, ann["consent"])
    resources = replayed()
    assert_skeleton(resources["Task"], TASK_SKELETON)
    assert_skeleton(resources["ServiceRequest"], REQUEST_SKELETON)  # the worker's sends go through the same shown_to


def test_a_facility_put_of_the_skeleton_keeps_the_hidden_elements(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    withdraw(parties, referral["consent"])
    facility, task_ref = parties.facility, f"Task/{referral['task']['id']}"
    stored_before = parties.social.get(task_ref).json()
    seen = facility.get(task_ref)
    assert_skeleton(seen.json(), TASK_SKELETON)
    # a hidden element may not be set by a skeleton update (whatever is stored there)
    refused = facility.put(task_ref, seen.json() | {"note": [{"text": "guess"}]}, headers={"If-Match": seen.headers["ETag"]})
    assert refused.status_code == 403 and "note" in refused.json()["issue"][0]["diagnostics"]
    # the facility receives the referral: status changes, nothing it cannot see is lost or shown
    response = facility.put(task_ref, seen.json() | {"status": "received"}, headers={"If-Match": seen.headers["ETag"]})
    assert response.status_code == 200, response.text
    assert_skeleton(response.json(), TASK_SKELETON)
    assert response.json()["status"] == "received"
    stored = parties.social.get(task_ref).json()
    assert stored["status"] == "received" and stored["meta"]["versionId"] == str(int(stored_before["meta"]["versionId"]) + 1)
    for element in ("note", "input", "description", "owner", "requester", "for", "focus", "partOf", "code"):
        assert stored[element] == stored_before[element], element
    assert SUBSETTED not in tags(stored)
    # a JSON Patch of the skeleton is laid over the stored version the same way
    operations = [{"op": "replace", "path": "/status", "value": "accepted"}]
    patched = facility.request("PATCH", task_ref, json=operations, headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert_skeleton(patched.json(), TASK_SKELETON)
    stored = parties.social.get(task_ref).json()
    assert stored["status"] == "accepted" and stored["note"] == TASK_NOTE and stored["input"] == TASK_INPUT


def test_include_of_the_referral_from_the_task_follows_the_same_rule(gateway: Gateway, parties: Parties, referral) -> None:  # noqa: F811
    query = f"Task?_id={referral['task']['id']}&_include=Task:focus"

    def shown() -> dict[str, dict[str, Any]]:
        response = parties.facility.get(query)
        assert response.status_code == 200, response.text
        return {e["resource"]["resourceType"]: e["resource"] for e in response.json().get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"}

    full = shown()
    assert_full(full["Task"])
    assert_full(full["ServiceRequest"])
    assert full["ServiceRequest"]["reasonCode"] == REASON
    withdraw(parties, referral["consent"])
    skeletons = shown()
    assert_skeleton(skeletons["Task"], TASK_SKELETON)
    assert_skeleton(skeletons["ServiceRequest"], REQUEST_SKELETON)
    suspend_tayview(gateway)
    assert shown() == {}


def test_a_search_never_matches_a_skeleton_on_what_it_leaves_out(parties: Parties, referral) -> None:  # noqa: F811
    """An open Communication the facility sees only as a skeleton (no category, no payload): a
    search or an If-None-Exist on its category must not tell the facility what the category is."""
    withdraw(parties, referral["consent"])
    facility = parties.facility
    sent = parties.social.post("Communication", {
        "resourceType": "Communication", "status": "in-progress",
        "category": [{"coding": [{"system": "https://pathway.scot/CodeSystem/communication-category", "code": "contingency-alert"}]}],
        "subject": {"reference": referral["patient"]}, "sender": {"reference": "Organization/dundee-hscp"},
        "recipient": [{"reference": "Organization/rehab-tayview-house"}], "payload": [{"contentString": "Left early; overdose risk"}],
    })
    assert sent.status_code == 201, sent.text
    alert = sent.json()["id"]
    shown = facility.get(f"Communication/{alert}").json()
    assert SUBSETTED in tags(shown) and "category" not in shown and "payload" not in shown
    assert ids(facility, f"Communication?_id={alert}") == [alert]  # found on what the skeleton shows
    for query in ("category=contingency-alert", "category=review-summary", "category:not=contingency-alert", "category:not=review-summary"):
        assert ids(facility, f"Communication?_id={alert}&{query}") == [], query
        assert facility.get(f"Communication?_id={alert}&{query}&_summary=count").json()["total"] == 0, query
    probe = {"resourceType": "Communication", "status": "completed", "subject": {"reference": referral["patient"]},
             "sender": {"reference": "Organization/rehab-tayview-house"}, "payload": [{"contentString": "probe"}]}
    created = facility.post("Communication", probe, headers={"If-None-Exist": f"_id={alert}&category=contingency-alert"})
    assert created.status_code == 201 and created.json()["id"] != alert  # no match: a new record, as for any other category



def test_a_revinclude_never_finds_a_skeleton_by_what_it_leaves_out(parties: Parties, referral) -> None:  # noqa: F811
    """The facility searches an Encounter it may see (Bob's, under his consent) with
    _revinclude=Communication:encounter: an open Communication about Ann that it sees only as a
    skeleton (no encounter) must not come back with it."""
    withdraw(parties, referral["consent"])
    social, facility = parties.social, parties.facility
    bob = person(social, 32)
    created(social, privacy_consent(bob, {"type": "permit", "actor": [{"role": {"text": "recipient"}, "reference": {"identifier": {"system": PARTNER, "value": "rehab-tayview-house"}}}]}))
    visit = created(social, {"resourceType": "Encounter", "status": "finished", "subject": {"reference": bob},
                             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}})["id"]
    assert facility.get(f"Encounter/{visit}").status_code == 200
    alert = created(social, {
        "resourceType": "Communication", "status": "in-progress", "subject": {"reference": referral["patient"]},
        "encounter": {"reference": f"Encounter/{visit}"}, "recipient": [{"reference": "Organization/rehab-tayview-house"}],
        "payload": [{"contentString": "Seen at the drop-in"}],
    })["id"]
    assert SUBSETTED in tags(facility.get(f"Communication/{alert}").json())
    assert ids(facility, f"Encounter?_id={visit}&_revinclude=Communication:encounter") == [visit]


def ids(client: PathwayClient, query: str) -> list[str]:
    response = client.get(query)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"]
