"""Round two of attacks (issues 13-16's new surfaces), over HTTP against a real server with
partners' own credentials: each test one attack, tried as a partner would."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from gateway.pathway.clock import CLOCK_ADJUSTMENT, CLOCK_ADJUSTMENT_SYSTEM
from gateway.pathway.codes import FACILITY_TASK, PATHWAY_TASK, TASK_TYPE_SYSTEM
from gateway.reporting.outcomes import collect_top
from gateway.reporting.records import collect_referrals
from gateway.delivery.models import UrgentAlertRow
from gateway.delivery.subscriptions import MAX_PER_ORGANISATION
from gateway.runtime import Gateway
from tests.test_escalation import early_exit
from tests.test_pathway_api import consent_for_carer, decide, one, person, refer, to_residential
from tests.test_reporting_api import _top_reading as _top
from tests.test_pathway_e2e import Parties, conf, conf_client, parties  # noqa: F401  (fixtures)
from tests.test_subscriptions import quiet, subscription  # noqa: F401  (fixtures)

# Hosts that only look local: a prefix check on "http://127.0.0.1" / "http://localhost" passed
# them, so notifications went in clear (http) to a host anywhere.
LOOK_LOCAL = [
    "http://127.0.0.1.attacker.example/hook",
    "http://localhost.attacker.example/hook",
    "http://localhost@attacker.example/hook",
    "http://127.0.0.1:80@attacker.example/hook",
    "http://localhostattacker.example/hook",
]
# Addresses inside the gateway's own network (cloud metadata, private ranges, unspecified).
INTERNAL = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.7/hook",
    "https://192.168.1.1/hook",
    "https://[fd00::1]/hook",
    "https://0.0.0.0/hook",
    "https://[::ffff:169.254.169.254]/hook",
]


@pytest.mark.parametrize("endpoint", LOOK_LOCAL + INTERNAL)
def test_a_subscription_endpoint_cannot_pass_for_local_or_reach_internal_addresses(quiet: Parties, endpoint: str) -> None:  # noqa: F811
    facility = quiet.facility
    answer = facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
    assert answer.status_code == 422, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert endpoint not in {e["resource"]["channel"]["endpoint"] for e in facility.get("Subscription").json()["entry"]}


def test_a_real_local_or_public_https_endpoint_is_still_accepted(quiet: Parties) -> None:  # noqa: F811
    facility = quiet.facility
    made: list[str] = []
    for endpoint in ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "https://tayview.example/hook", "https://81.144.200.7/hook"]:
        answer = facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
        assert answer.status_code == 201, f"{endpoint}: {answer.text}"
        made.append(answer.json()["channel"]["endpoint"])
    assert set(made) <= {e["resource"]["channel"]["endpoint"] for e in facility.get("Subscription").json()["entry"]}



def test_a_partner_cannot_forge_a_pathway_task_that_the_waiting_times_return_counts(gateway: Gateway, parties: Parties) -> None:  # noqa: F811
    """The facility (which learns the referral's id from its own facility referral) POSTs a second Task coded as
    the referral's pathway Task, with a year's clock adjustment and another owner: the return
    must keep counting the workflow's own pathway Task only."""
    social, facility = parties.social, parties.facility
    patient = person(social, 61)
    referral = refer(social, patient, "REF-ATTACK-0001")
    to_residential(social, referral)
    pathway_task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    # what the facility knows of the referral: its own Task, and the facility referral it is for
    own = one(facility, "Task?owner=Organization/rehab-tayview-house&status=requested")
    referral_ref = facility.get(own["focus"]["reference"]).json()["basedOn"][0]["reference"]  # its facility referral names the referral
    assert referral_ref == f"ServiceRequest/{referral['id']}"
    with gateway.reading() as session:
        before = {r.reference: (r.service, r.adjustments, r.stage, r.admitted) for r in collect_referrals(gateway.repository(session))}
    assert before[referral_ref][0] == pathway_task["owner"]["reference"] and before[referral_ref][1] == ()
    forged = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": TASK_TYPE_SYSTEM, "code": PATHWAY_TASK}]},
        "focus": {"reference": referral_ref},
        "for": {"reference": patient},
        "owner": {"reference": "Organization/rehab-tayview-house"},
        "authoredOn": "2020-01-01",
        "extension": [
            {
                "url": CLOCK_ADJUSTMENT,
                "extension": [
                    {"url": "reason", "valueCoding": {"system": CLOCK_ADJUSTMENT_SYSTEM, "code": "unavailable"}},
                    {"url": "period", "valuePeriod": {"start": "2020-01-01", "end": "2030-12-31"}},
                ],
            }
        ],
    }
    answer = facility.post("Task", forged)
    assert answer.status_code == 403, answer.text
    # nor by turning a Task of its own into one, or a stay of its own into an admission
    plain = facility.post("Task", {k: v for k, v in forged.items() if k not in ("code", "extension")} | {"status": "requested"})
    assert plain.status_code == 201, plain.text
    assert facility.put(f"Task/{plain.json()['id']}", plain.json() | {"code": forged["code"]}).status_code == 403
    stay = forged | {"code": {"coding": [{"system": TASK_TYPE_SYSTEM, "code": FACILITY_TASK}]}, "partOf": [own["partOf"][0]], "status": "in-progress",
                     "executionPeriod": {"start": "2020-01-02"}}
    assert facility.post("Task", stay).status_code == 403
    with gateway.reading() as session:
        after = {r.reference: (r.service, r.adjustments, r.stage, r.admitted) for r in collect_referrals(gateway.repository(session))}
    assert after == before


def test_a_partner_cannot_turn_a_response_of_its_own_into_the_allocation_decision_or_a_top_reading(gateway: Gateway, parties: Parties) -> None:  # noqa: F811
    """The facility records a harmless QuestionnaireResponse, then PUTs it as the referral's
    resource-allocation decision ("no", two years earlier), or as a TOP reading of the
    referral: updates skipped the checks a new one gets, and the reports took them."""
    social, facility = parties.social, parties.facility
    patient = person(social, 62)
    referral = refer(social, patient, "REF-ATTACK-0002")
    to_residential(social, referral)
    referral_ref = f"ServiceRequest/{referral['id']}"

    def counted() -> tuple[Any, Any]:
        with gateway.reading() as session:
            repo = gateway.repository(session)
            decided = next((r.decided, r.decision) for r in collect_referrals(repo) if r.reference == referral_ref)
            return decided, collect_top(repo)

    before = counted()
    assert before[0][1] == "yes"
    harmless = {"resourceType": "QuestionnaireResponse", "status": "completed", "subject": {"reference": patient}, "authored": "2020-01-01",
                "questionnaire": "https://tayview.example/Questionnaire/welcome"}
    decision = orjson.loads(decide(social, referral, "no").request.read())  # a decision's body (itself refused: already decided)
    for forged in (decision, _top(referral_ref, alcohol=28)):
        made = facility.post("QuestionnaireResponse", harmless)
        assert made.status_code == 201, made.text
        answer = facility.put(f"QuestionnaireResponse/{made.json()['id']}", made.json() | {k: v for k, v in forged.items() if k != "resourceType"})
        assert answer.status_code == 403, answer.text
        assert "record a new response" in answer.json()["issue"][0]["diagnostics"]
    assert counted() == before


def test_a_partner_cannot_turn_a_request_of_its_own_into_a_rehab_referral(gateway: Gateway, parties: Parties) -> None:  # noqa: F811
    """The third sector's plain ServiceRequest PUT back as a rehab referral carrying an existing referral's
    business id: it skipped the duplicate check and the pathway, and the return counted it."""
    social, agency = parties.social, parties.agency
    patient = person(social, 63)
    referral = refer(social, patient, "REF-ATTACK-0003")

    def referrals() -> list[str]:
        with gateway.reading() as session:
            return sorted(r.reference for r in collect_referrals(gateway.repository(session)))

    before = referrals()
    plain = {k: v for k, v in referral.items() if k not in ("id", "meta", "category", "extension")} | {"requester": {"reference": "Organization/tayside-recovery-network"}}
    made = agency.post("ServiceRequest", plain)
    assert made.status_code == 201, made.text
    answer = agency.put(f"ServiceRequest/{made.json()['id']}", made.json() | {"category": referral["category"], "authoredOn": "2020-01-01"})
    assert answer.status_code == 403, answer.text
    assert referrals() == before and f"ServiceRequest/{referral['id']}" in before


def test_a_partner_cannot_make_the_gateway_a_heartbeat_flood_of_any_size(quiet: Parties) -> None:  # noqa: F811
    """Heartbeats are at least 10 s apart, but nothing capped how many Subscriptions an
    organisation held: each a handshake now and a heartbeat every 10 s to an endpoint of its
    choosing. At most MAX_PER_ORGANISATION per organisation; deleting one makes room."""
    facility = quiet.facility
    made = []
    for n in range(MAX_PER_ORGANISATION):
        answer = facility.post("Subscription", {"resourceType": "Subscription", **subscription(f"https://victim.example/{n}", "facility-referral", heartbeat=10)})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    refused = facility.post("Subscription", {"resourceType": "Subscription", **subscription("https://victim.example/more", "facility-referral", heartbeat=10)})
    assert refused.status_code == 422, refused.text
    assert f"at most {MAX_PER_ORGANISATION}" in refused.json()["issue"][0]["diagnostics"]
    # another organisation is not affected by the facility's count
    other = quiet.agency.post("Subscription", {"resourceType": "Subscription", **subscription("https://agency.example/hook", "referral")})
    assert other.status_code == 201, other.text
    assert facility.delete(f"Subscription/{made[0]}").status_code == 204
    again = facility.post("Subscription", {"resourceType": "Subscription", **subscription("https://victim.example/more", "facility-referral", heartbeat=10)})
    assert again.status_code == 201, again.text


def test_an_urgent_alert_is_acknowledged_and_reports_received_only_by_those_entitled(gateway: Gateway, parties: Parties) -> None:  # noqa: F811
    """(No hole found; a guard.) The facility that sent the person home early, and the carers'
    portal acting for the carer, try to ``$ack`` the HSCP's urgent alert; both, and the
    facility and the portal, ask for MeasureReports with crafted parameters; the portal tries
    to subscribe for the person it acts for."""
    alert_id = early_exit(parties, 64)
    patient = parties.social.get(f"Communication/{alert_id}").json()["subject"]["reference"]
    carer = consent_for_carer(parties.social, patient)
    as_carer = {"X-Pathway-Acting-For": carer, "X-Pathway-Purpose": "carer-support"}
    assert parties.facility.post(f"Communication/{alert_id}/$ack").status_code in (403, 404)
    assert parties.carer_portal.post(f"Communication/{alert_id}/$ack", headers=as_carer).status_code in (403, 404)
    with gateway.reading() as session:
        row = session.get(UrgentAlertRow, f"Communication/{alert_id}")
        assert row is not None and row.acknowledged_at is None
    # (the portal without X-Pathway-Acting-For is refused before that: 400)
    for client, headers, status in ((parties.facility, None, 403), (parties.carer_portal, as_carer, 403), (parties.carer_portal, None, 400)):
        for query in ("MeasureReport", "MeasureReport?measure=mat-1&period=ge2026-07-01", f"MeasureReport?subject={patient}"):
            answer = client.get(query, headers=headers)
            assert answer.status_code == status, f"{query}: {answer.status_code} {answer.text[:200]}"
    portal_sub = parties.carer_portal.post("Subscription", {"resourceType": "Subscription", **subscription("https://portal.example/hook", "contingency-alert")}, headers=as_carer)
    assert portal_sub.status_code == 403, portal_sub.text


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:5432/", "https://127.0.0.2:8443/hook", "https://[::1]:6379/", "http://localhost:9/hook"])
def test_outside_the_demo_a_partner_cannot_point_a_subscription_at_the_gateways_own_host(
    gateway: Gateway, quiet: Parties, endpoint: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setattr(gateway, "settings", dataclasses.replace(gateway.settings, loopback_subscriptions=False))
    answer = quiet.facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
    assert answer.status_code == 422, answer.text
    assert answer.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    assert endpoint not in {e["resource"]["channel"]["endpoint"] for e in quiet.facility.get("Subscription").json()["entry"]}
