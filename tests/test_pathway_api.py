"""The pathway over the API (DESIGN §7 walk-through), over real HTTP with real keys."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from gateway.conf import load_conf
from gateway.delivery import sync_subscriptions
from gateway.directory import _import_agreement as import_agreement
from gateway.delivery.models import DeliveryRow
from gateway.pathway import raise_overdue_reviews
from gateway.pathway.config import PathwayConf
from gateway.pathway.metrics import PathwayRecord, Stay, figures
from gateway.runtime import Gateway
from gateway.store.models import ConfDocumentRow
from gateway.store.repository import now_utc
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM, make_chi
from tests.conftest import FACILITY, HSCP, ODS, PARTNER, REPO, privacy_consent

STAGE = "https://pathway.scot/CodeSystem/stage"
DIRECTORY = f"{PARTNER}|pathway"
AGENCY = f"{PARTNER}|tayside-recovery-network"
GP = f"{ODS}|21506"  # Seagate Green: a referrer under the primary-care agreement
FACILITY_SCOPES = ["system/*.read", "system/Task.write", "system/QuestionnaireResponse.write", "system/Communication.write"]


@pytest.fixture(autouse=True)
def directory(gateway: Gateway) -> None:
    """The demo partnership's organisations, named workers, pathway.yaml and some subscriptions."""
    partners = yaml.safe_load((REPO / "conf" / "partners.yaml").read_text())
    settings = (REPO / "conf" / "pathway.yaml").read_bytes()
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        for org in partners["organizations"]:
            identifiers = [{"system": i["system"], "value": i["value"]} for i in org["identifiers"]]
            repo.update({"resourceType": "Organization", "id": org["id"], "name": org["name"], "identifier": identifiers}, DIRECTORY)
        for person in partners["people"]:
            role = {"resourceType": "PractitionerRole", "id": person["id"], "organization": {"reference": f"Organization/{person['organization']}"}}
            repo.update(role, DIRECTORY)
        session.add(ConfDocumentRow(name="pathway.yaml", version=1, sha256=hashlib.sha256(settings).hexdigest(), body=settings.decode(), loaded=now_utc()))
        partners_raw = (REPO / "conf" / "partners.yaml").read_bytes()  # who may record consent
        session.add(ConfDocumentRow(name="partners.yaml", version=1, sha256=hashlib.sha256(partners_raw).hexdigest(), body=partners_raw.decode(), loaded=now_utc()))
        for agreement in load_conf(REPO / "conf").agreements:  # partners see workflow records only under an agreement in force
            import_agreement(session, agreement.model_dump(mode="json"))
        sync_subscriptions(
            session,
            [
                (HSCP, "https://hscp.example/in", ["referral", "task-status", "contingency-alert", "review"]),
                (FACILITY, "https://tayview.example/in", ["facility-referral", "task-status"]),
                (AGENCY, "https://network.example/in", ["referral"]),
                (f"{PARTNER}|dundee-carers-centre", "https://carers.example/in", ["review-summary", "contingency-alert"]),
            ],
        )


def deliveries(gateway: Gateway, event: str) -> list[DeliveryRow]:
    with gateway.reading() as session:
        return list(session.scalars(select(DeliveryRow).where(DeliveryRow.event == event)))


# --- the walk-through's steps ------------------------------------------------------------------


def person(client, serial: int) -> str:  # type: ignore[no-untyped-def]
    chi = make_chi(date(1984, 3, 9), "female", serial)
    patient = {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": chi}], "name": [{"family": "Reid", "given": ["Ann"]}], "gender": "female", "birthDate": "1984-03-09"}
    response = client.post("Patient", patient)
    assert response.status_code == 201, response.text
    return f"Patient/{response.json()['id']}"


def refer(client, patient: str, referral_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    ext = "https://pathway.scot/StructureDefinition/"
    referral = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": REFERRAL_SYSTEM, "value": referral_id}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "https://pathway.scot/CodeSystem/request-category", "code": "rehab-referral"}]}],
        "subject": {"reference": patient},
        "requester": {"reference": "PractitionerRole/sw-aileen-soutar"},
        "reasonCode": [{"text": "Alcohol dependence; ready for rehab", "coding": [{"system": "https://pathway.scot/CodeSystem/substance", "code": "alcohol"}]}],
        "note": [{"text": "Motivated; supportive sister"}],
        "extension": [
            {"url": ext + "goal", "valueString": "Stay sober and get back to work"},
            {"url": ext + "contingency-plan", "valueString": "Same-day call from key worker; naloxone kit; sister to be told"},
            {"url": ext + "detox-required", "valueBoolean": True},
            {"url": ext + "key-worker", "valueReference": {"reference": "PractitionerRole/kw-sarah-mcintyre"}},
            {"url": ext + "preferred-facility", "valueReference": {"reference": "Organization/rehab-tayview-house"}},
        ],
    }
    response = client.post("ServiceRequest", referral)
    assert response.status_code == 201, response.text
    return response.json()


def one(client, query: str, **kwargs: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get(query, **kwargs)
    assert response.status_code == 200, response.text
    resources = [e["resource"] for e in response.json().get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"]
    assert len(resources) == 1, (query, resources)
    return resources[0]


def move(client, task_id: str, **changes: Any):  # type: ignore[no-untyped-def]
    """PUT the Task with ``changes`` (stage= sets businessStatus) and If-Match."""
    current = client.get(f"Task/{task_id}")
    task = current.json()
    if "stage" in changes:
        task["businessStatus"] = {"coding": [{"system": STAGE, "code": changes.pop("stage")}]}
    task.update(changes)
    return client.put(f"Task/{task_id}", task, headers={"If-Match": current.headers["ETag"]})


def moved(client, task_id: str, **changes: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = move(client, task_id, **changes)
    assert response.status_code == 200, response.text
    return response.json()


def decide(client, referral: dict[str, Any], decision: str):  # type: ignore[no-untyped-def]
    items = [{"linkId": "decision", "answer": [{"valueCoding": {"code": decision}}]}]
    items += [{"linkId": c, "answer": [{"valueCoding": {"code": "met" if decision == "yes" else "not-met"}}]} for c in ("readiness", "commitment", "risks")]
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "https://pathway.scot/Questionnaire/resource-allocation",
        "status": "completed",
        "basedOn": [{"reference": f"ServiceRequest/{referral['id']}"}],
        "item": items,
    }
    return client.post("QuestionnaireResponse", response)


def star(client, request_ref: str, scores: dict[str, int], held: str):  # type: ignore[no-untyped-def]
    items = [{"linkId": area, "answer": [{"valueInteger": score}]} for area, score in scores.items()]
    items.append({"linkId": "attended", "answer": [{"valueBoolean": True}]})
    items.append({"linkId": "notes", "answer": [{"valueString": "Settling in; cravings easing"}]})
    reading = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "https://pathway.scot/Questionnaire/outcome-star",
        "status": "completed",
        "authored": held,
        "basedOn": [{"reference": request_ref}],
        "item": items,
    }
    return client.post("QuestionnaireResponse", reading)


def problem(response) -> str:  # type: ignore[no-untyped-def]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


def consent_for_carer(client, patient: str) -> str:  # type: ignore[no-untyped-def]
    carer = client.post("RelatedPerson", {"resourceType": "RelatedPerson", "patient": {"reference": patient}, "name": [{"family": "Reid", "given": ["Jean"]}], "relationship": [{"text": "sister"}]})
    assert carer.status_code == 201, carer.text
    carer_ref = f"RelatedPerson/{carer.json()['id']}"
    consent = privacy_consent(patient, {
        "type": "permit",
        "actor": [{"role": {"text": "carer"}, "reference": {"reference": carer_ref}}],
        "purpose": [{"system": "https://pathway.scot/CodeSystem/purpose", "code": "carer-support"}],
    }, performer="Organization/dundee-hscp", policyRule={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]})
    assert client.post("Consent", consent).status_code == 201
    return carer_ref


def consent_for(client, patient: str, *organizations: str) -> None:  # type: ignore[no-untyped-def]
    """The person lets ``organizations`` ("system|value") see their records: a partner sees a
    workflow record in full, or a finished one at all, only with the person's consent."""
    actors = [{"role": {"text": "recipient"}, "reference": {"identifier": dict(zip(("system", "value"), o.split("|", 1)))}} for o in organizations]
    response = client.post("Consent", privacy_consent(patient, {"type": "permit", "actor": actors}))
    assert response.status_code == 201, response.text


def to_residential(social, referral: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    moved(social, task["id"], stage="initial-meeting", status="accepted")
    moved(social, task["id"], stage="resource-allocation", status="in-progress")
    assert decide(social, referral, "yes").status_code == 201
    moved(social, task["id"], stage="assessment")
    moved(social, task["id"], stage="preparation")
    facility = [{"type": {"text": "facility"}, "valueReference": {"reference": "Organization/rehab-tayview-house"}}]
    return moved(social, task["id"], stage="residential", input=facility)


def admit(facility, admitted: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    task = one(facility, "Task?owner=Organization/rehab-tayview-house&status=requested")
    moved(facility, task["id"], status="received")
    moved(facility, task["id"], status="accepted")
    return moved(facility, task["id"], status="in-progress", executionPeriod={"start": admitted})


# --- the tests ---------------------------------------------------------------------------------


def test_walk_through_from_referral_to_early_exit(gateway: Gateway, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    facility = make_client("rehab-facility", FACILITY, scopes=FACILITY_SCOPES)
    patient = person(social, 11)
    carer = consent_for_carer(social, patient)

    # 1. the referral opens the pathway in the same transaction
    referral = refer(social, patient, "REF-0001")
    task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["owner"] == {"reference": "Organization/dundee-hscp"}
    assert task["businessStatus"]["coding"][0] == {"system": STAGE, "code": "referral"}
    assert task["identifier"] == [{"system": REFERRAL_SYSTEM, "value": "REF-0001"}]
    episode = one(social, f"EpisodeOfCare?identifier={REFERRAL_SYSTEM}|REF-0001")
    assert episode["status"] == "planned" and episode["extension"][0]["valueCoding"]["code"] == "referral"
    plan = one(social, f"CarePlan?identifier={REFERRAL_SYSTEM}|REF-0001")
    assert [g["description"]["text"] for g in plan["contained"] if g["resourceType"] == "Goal"] == ["Stay sober and get back to work"]
    activities = {a["detail"]["code"]["coding"][0]["code"]: a["detail"] for a in plan["activity"]}
    assert activities["contingency-plan"]["description"].startswith("Same-day call")
    assert {"detox", "counselling", "housing", "carers-support", "employability"} <= set(activities)
    assert [d.focus for d in deliveries(gateway, "referral")] == [f"Task/{task['id']}"]

    # 2-4. stages move through the pathway Task; the decision is recorded on it
    residential = to_residential(social, referral)
    assert residential["output"][0]["type"]["text"] == "resource-allocation-decision"
    episode = one(social, f"EpisodeOfCare?identifier={REFERRAL_SYSTEM}|REF-0001")
    assert episode["status"] == "active" and episode["extension"][0]["valueCoding"]["code"] == "residential"

    # the facility finds its Task and reads the package
    facility_task = one(facility, "Task?owner=Organization/rehab-tayview-house&status=requested")
    assert facility_task["partOf"] == [{"reference": f"Task/{task['id']}"}]
    assert [d.focus for d in deliveries(gateway, "facility-referral")] == [f"Task/{facility_task['id']}"]
    package = facility.get(f"Task/{facility_task['id']}/$package")
    assert package.status_code == 200, package.text
    bundle = package.json()
    assert bundle["type"] == "collection"
    shown = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert "ServiceRequest" in shown and "OperationOutcome" in shown  # the custodian policy withholds the rest
    assert bundle["entry"][-1]["resource"]["issue"][0]["diagnostics"] == "some information withheld"
    assert social.get(f"Task/{facility_task['id']}/$package").status_code == 403

    # 5. admission
    admitted = (date.today() - timedelta(weeks=5)).isoformat()
    admit(facility, admitted)
    assert any(d.focus == f"Task/{facility_task['id']}" for d in deliveries(gateway, "task-status"))

    # 6. a review: Encounter + one Observation per area; carers get the safe summary only
    scores = {"drug-use": 6, "alcohol-use": 4, "emotional-health": 5}
    reading = star(facility, facility_task["focus"]["reference"], scores, (date.today() - timedelta(weeks=1)).isoformat())
    assert reading.status_code == 201, reading.text
    encounter = one(facility, f"Encounter?based-on={facility_task['focus']['reference']}")
    assert encounter["class"]["code"] == "review" and encounter["episodeOfCare"] == [{"reference": f"EpisodeOfCare/{episode['id']}"}]
    observations = facility.get(f"Observation?encounter=Encounter/{encounter['id']}").json()["entry"]
    assert sorted((o["resource"]["code"]["coding"][0]["code"], o["resource"]["valueInteger"]) for o in observations) == sorted(scores.items())
    summary = one(social, "Communication?category=review-summary")
    assert {"reference": carer} in summary["recipient"]
    assert " ".join(p["contentString"] for p in summary["payload"]).count("Review held on") == 1
    assert "cravings" not in str(summary) and "drug-use" not in str(summary)
    assert len(deliveries(gateway, "review-summary")) == 1

    # 7. early exit: the alert and the move to community recovery, at once
    exited = move(
        facility,
        facility_task["id"],
        status="failed",
        statusReason={"coding": [{"system": "https://pathway.scot/CodeSystem/task-reason", "code": "early-exit"}]},
        executionPeriod={"start": admitted, "end": date.today().isoformat()},
    )
    assert exited.status_code == 200, exited.text
    alert = one(social, "Communication?recipient=Organization/dundee-hscp&category=contingency-alert")
    assert alert["priority"] == "urgent"
    assert {"reference": "Organization/dundee-hscp"} in alert["recipient"]
    assert {"reference": "PractitionerRole/kw-sarah-mcintyre"} in alert["recipient"]
    assert {"reference": "Organization/dundee-recovery-service"} in alert["recipient"]
    assert "naloxone" in alert["payload"][1]["contentString"]
    # the consented carer gets a carer-safe alert of their own, without the clinical plan
    assert {"reference": carer} not in alert["recipient"]
    carer_alert = one(social, f"Communication?recipient={carer}&category=contingency-alert")
    assert carer_alert["priority"] == "urgent" and "naloxone" not in str(carer_alert["payload"])
    pathway = social.get(f"Task/{task['id']}").json()
    assert pathway["businessStatus"]["coding"][0]["code"] == "community-recovery"
    handovers = social.get(f"Task?part-of=Task/{task['id']}&code=https://pathway.scot/CodeSystem/task-type|handover").json()["entry"]
    assert sorted(h["resource"]["businessStatus"]["coding"][0]["code"] for h in handovers) == ["carers-support", "counselling", "employability", "housing"]
    assert {d.recipient for d in deliveries(gateway, "contingency-alert")} == {HSCP, f"{PARTNER}|dundee-carers-centre"}

    closed = moved(social, task["id"], stage="closed", status="completed")
    assert closed["status"] == "completed"
    assert one(social, f"EpisodeOfCare?identifier={REFERRAL_SYSTEM}|REF-0001")["status"] == "finished"


def test_no_decision_routes_to_the_community_pathway(make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    agency = make_client("third-sector", AGENCY)
    referral = refer(social, person(social, 12), "REF-0002")
    task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    moved(social, task["id"], stage="initial-meeting", status="accepted")
    moved(social, task["id"], stage="resource-allocation", status="in-progress")
    assert decide(social, referral, "no").status_code == 201

    refused = move(social, task["id"], stage="assessment")
    assert refused.status_code == 409
    assert problem(refused) == "the resource allocation decision was 'no', so the pathway cannot move to assessment"
    moved(social, task["id"], stage="alternative-pathway")

    community = one(agency, "Task?owner=Organization/tayside-recovery-network&status=requested")
    assert community["partOf"] == [{"reference": f"Task/{task['id']}"}]
    request = agency.get(community["focus"]["reference"]).json()
    assert request["category"][0]["coding"][0]["code"] == "community-referral"
    assert request["basedOn"] == [{"reference": f"ServiceRequest/{referral['id']}"}]


def test_moves_the_pathway_does_not_allow_are_refused_with_reasons(make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    gp = make_client("gp-practice", GP)
    facility = make_client("rehab-facility", FACILITY, scopes=FACILITY_SCOPES)
    referral = refer(gp, person(gp, 13), "REF-0003")
    task = one(gp, f"Task?focus=ServiceRequest/{referral['id']}")
    assert task["requester"] == {"reference": "Organization/gp-seagate-green"}

    skipped = move(social, task["id"], stage="residential", status="in-progress")
    assert skipped.status_code == 409
    assert problem(skipped) == "the pathway cannot move from referral to residential; after referral comes only initial-meeting"
    wrong_status = move(social, task["id"], stage="initial-meeting", status="received")
    assert wrong_status.status_code == 409 and "must be accepted" in problem(wrong_status)

    by_referrer = move(gp, task["id"], stage="initial-meeting", status="accepted")
    assert by_referrer.status_code == 403
    assert problem(by_referrer) == "only the Task's owner may set its status to accepted"
    assert move(social, task["id"], status="cancelled").status_code == 403  # only the requester cancels
    as_seen = social.get(f"Task/{task['id']}").json() | {"status": "accepted", "businessStatus": {"coding": [{"system": STAGE, "code": "initial-meeting"}]}}
    assert facility.put(f"Task/{task['id']}", as_seen).status_code == 404  # a party the Task does not name cannot even see it

    moved(social, task["id"], stage="initial-meeting", status="accepted")
    moved(social, task["id"], stage="resource-allocation", status="in-progress")
    early = move(social, task["id"], stage="assessment")
    assert early.status_code == 409 and "decision first" in problem(early)
    bad_decision = decide(social, referral, "maybe")
    assert bad_decision.status_code == 422
    assert decide(gp, referral, "yes").status_code == 403
    assert decide(social, referral, "yes").status_code == 201
    moved(social, task["id"], stage="assessment")
    moved(social, task["id"], stage="preparation")
    no_facility = move(social, task["id"], stage="residential")
    assert no_facility.status_code == 409 and 'type.text "facility"' in problem(no_facility)
    facility_input = [{"type": {"text": "facility"}, "valueReference": {"reference": "Organization/rehab-tayview-house"}}]
    moved(social, task["id"], stage="residential", input=facility_input)

    stay = one(facility, "Task?owner=Organization/rehab-tayview-house&status=requested")
    assert move(facility, stay["id"], status="completed").status_code == 409  # requested -> completed is not a Task move
    assert move(facility, stay["id"], status="cancelled").status_code == 403
    assert move(facility, stay["id"], status="rejected").status_code == 409  # needs a coded reason
    moved(facility, stay["id"], status="accepted")
    no_date = move(facility, stay["id"], status="in-progress")
    assert no_date.status_code == 409 and "executionPeriod.start" in problem(no_date)
    moved(facility, stay["id"], status="in-progress", executionPeriod={"start": date.today().isoformat()})
    out_of_range = star(facility, stay["focus"]["reference"], {"drug-use": 11}, date.today().isoformat())
    assert out_of_range.status_code == 422 and "1 to 10" in problem(out_of_range)
    assert star(social, stay["focus"]["reference"], {"drug-use": 5}, date.today().isoformat()).status_code == 403
    no_reason = move(facility, stay["id"], status="failed", executionPeriod={"start": date.today().isoformat(), "end": date.today().isoformat()})
    assert no_reason.status_code == 409 and "early-exit" in problem(no_reason)


def test_early_exit_alert_and_its_cause_are_one_transaction(gateway: Gateway, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    facility = make_client("rehab-facility", FACILITY, scopes=FACILITY_SCOPES)
    patient = person(social, 14)
    consent_for_carer(social, patient)
    to_residential(social, refer(social, patient, "REF-0004"))
    stay = admit(facility, date.today().isoformat())
    with gateway.transaction() as session:  # the carers' portal leaves the directory: the alert cannot reach the carer
        gateway.repository(session).delete("Organization", "dundee-carers-centre")

    exit_ = {"coding": [{"system": "https://pathway.scot/CodeSystem/task-reason", "code": "early-exit"}]}
    period = {"start": stay["executionPeriod"]["start"], "end": date.today().isoformat()}
    refused = move(facility, stay["id"], status="failed", statusReason=exit_, executionPeriod=period)
    assert refused.status_code == 503 and "dundee-carers-centre" in problem(refused)
    assert facility.get(f"Task/{stay['id']}").json()["status"] == "in-progress"
    alerts = social.get("Communication?category=contingency-alert").json().get("entry", [])
    assert [e["resource"]["resourceType"] for e in alerts if e["resource"]["resourceType"] == "Communication"] == []


def test_overdue_reviews_are_flagged_once_to_facility_and_key_worker(app, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    facility = make_client("rehab-facility", FACILITY, scopes=FACILITY_SCOPES)
    patient = person(social, 15)
    consent_for(social, patient, FACILITY)
    to_residential(social, refer(social, patient, "REF-0005"))
    admitted = date.today() - timedelta(weeks=9)
    stay = admit(facility, admitted.isoformat())
    star(facility, stay["focus"]["reference"], {"drug-use": 5}, (admitted + timedelta(weeks=4)).isoformat())

    raised = raise_overdue_reviews(app.state.fhir)
    assert len(raised) == 1
    flag = one(facility, "Communication?category=review-overdue")
    assert f"was due on {(admitted + timedelta(weeks=8)).isoformat()}" in flag["payload"][0]["contentString"]
    assert flag["recipient"] == [{"reference": "Organization/rehab-tayview-house"}, {"reference": "PractitionerRole/kw-sarah-mcintyre"}]
    assert raise_overdue_reviews(app.state.fhir) == []


def test_metrics_for_a_known_set_of_pathways() -> None:
    conf = PathwayConf(rehab_team="dundee-hscp", review_interval_weeks=4)
    today = date(2026, 12, 31)
    d = date.fromisoformat
    records = [
        # decided in 14 days, admitted after 70, four-weekly reviews on time twice, then early exit
        PathwayRecord(d("2026-09-01"), "community-recovery", d("2026-09-15"), "yes", Stay(d("2026-11-10"), d("2026-12-20"), True, [d("2026-12-05"), d("2026-12-08")])),
        # decided in 28 days: outside the standard
        PathwayRecord(d("2026-10-01"), "alternative-pathway", d("2026-10-29"), "no"),
        # waiting 30 days with no decision: counts against the standard
        PathwayRecord(d("2026-12-01"), "initial-meeting"),
        # waiting 10 days: not counted yet
        PathwayRecord(d("2026-12-21"), "referral"),
        # decided in 7 days, admitted after 35, one review due and missed
        PathwayRecord(d("2026-10-20"), "residential", d("2026-10-27"), "yes", Stay(d("2026-11-24"), None, False, [])),
    ]
    result = figures(records, conf, today)
    assert result["referral_to_decision_days"] == {"count": 3, "median": 14, "mean": 16.3, "limit_days": 21, "within_limit": 0.667}
    assert result["referral_to_admission_days"] == {"count": 2, "median": 52.5, "mean": 52.5}
    assert result["treated_within_standard"] | {} == {"standard_days": 21, "target": 0.9, "counted": 4, "within": 2, "share": 0.5, "met": False}
    assert result["reviews_on_time"] == {"interval_weeks": 4, "target": 0.8, "due": 2, "on_time": 1, "share": 0.5, "met": False}
    assert result["early_exits"] == {"count": 1, "admissions": 2, "share": 0.5}
    assert result["decisions"] == {"no": 1, "yes": 2}


def test_metrics_are_served_to_authenticated_callers(server, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    refer(social, person(social, 16), "REF-0006")
    response = social.get(f"{server.url}/pathway/metrics")
    assert response.status_code == 200, response.text
    assert response.json()["referrals"] == 1 and response.json()["stages"] == {"referral": 1}
    assert social.http.request("GET", f"{server.url}/pathway/metrics", withhold_token=True).status_code == 401  # no bearer token
