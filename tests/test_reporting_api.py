"""The reports over HTTP: ``GET /fhir/MeasureReport`` for those entitled (and no one else),
and TOP readings recorded on the pathway by the services that treat the person."""

from __future__ import annotations

from datetime import date, timedelta

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from gateway.audit.chain import read_event
from gateway.pathway.clock import CLOCK_ADJUSTMENT, CLOCK_ADJUSTMENT_SYSTEM
from gateway.pathway.top import raise_overdue_top_reviews
from gateway.reporting.quarters import Quarter
from gateway.runtime import Gateway
from gateway.store.models import AuditRow
from mappings.top import TIMEPOINT_SYSTEM, top_form
from tests.conftest import FACILITY, HSCP, ODS
from tests.test_pathway_api import FACILITY_SCOPES, GP, consent_for, decide, directory, move, moved, one, person, refer  # noqa: F401 - directory is an autouse fixture

RECOVERY_SERVICE = f"{ODS}|S037R1"


def _top_reading(referral: str, **values: int) -> dict[str, object]:
    items = [{"linkId": "timepoint", "answer": [{"valueCoding": {"system": TIMEPOINT_SYSTEM, "code": "start"}}]}]
    items += [{"linkId": k.replace("_", "-"), "answer": [{"valueInteger": v}]} for k, v in values.items()]
    return {"resourceType": "QuestionnaireResponse", "questionnaire": top_form().url, "status": "completed", "basedOn": [{"reference": referral}], "item": items}


def _audit_details(gateway: Gateway) -> list[str]:
    with gateway.reading() as session:
        return [read_event(session, row).get("outcomeDesc", "") for row in session.scalars(select(AuditRow).order_by(AuditRow.seq))]


def test_measure_reports_go_to_the_hscp_and_the_partnership_lead_only(gateway: Gateway, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    refer(social, person(social, 1), "REF-MR-1")
    this_quarter = Quarter.containing(date.today())
    answer = social.get(f"MeasureReport?period=ge{this_quarter.start}&period=le{this_quarter.end}")
    assert answer.status_code == 200, answer.text
    bundle = Bundle.model_validate(answer.json())
    assert bundle.type == "searchset" and bundle.total == 2
    reports = {e.resource.measure: e.resource for e in bundle.entry if e.search.mode == "match"}
    waits = reports["https://pathway.scot/Measure/treatment-waiting-times"]
    ongoing = next(g for g in waits.group if g.code.coding[0].code == "ongoing")
    assert [p.count for p in ongoing.population] == [1, 1, 1]  # the one referral, waiting since today
    assert {e.resource.url for e in bundle.entry if e.search.mode == "include"} == set(reports)
    assert any("MeasureReport treatment-waiting-times, mat-1 for" in d for d in _audit_details(gateway))

    lead = make_client("lead", GP, scopes=["system/*.read"], roles=["partnership-lead"])
    assert lead.get("MeasureReport?measure=mat-1").status_code == 200
    facility = make_client("rehab-facility", FACILITY, scopes=FACILITY_SCOPES)
    refused = facility.get("MeasureReport")
    assert refused.status_code == 403 and "partnership lead" in refused.json()["issue"][0]["diagnostics"]
    assert any(d.startswith("MeasureReport refused") for d in _audit_details(gateway))
    no_scope = make_client("hscp-writer", HSCP, scopes=["system/Task.write"])
    assert no_scope.get("MeasureReport").status_code == 403
    bad = social.get("MeasureReport?period=2026-06-30&period=2026-07-01")
    assert bad.status_code == 400 and "one quarter" in bad.json()["issue"][0]["diagnostics"]
    assert social.get("MeasureReport?measure=unknown").status_code == 400


def test_top_readings_are_recorded_by_the_services_that_treat_the_person(make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    referral = refer(social, person(social, 2), "REF-TOP-1")
    reference = f"ServiceRequest/{referral['id']}"
    recovery = make_client("recovery-service", RECOVERY_SERVICE)
    created = recovery.post("QuestionnaireResponse", _top_reading(reference, opiates=12, quality_of_life=9))
    assert created.status_code == 201, created.text
    assert created.json()["subject"] == referral["subject"]
    assert social.post("QuestionnaireResponse", _top_reading(reference, opiates=10)).status_code == 201  # the rehab team owns the referral
    gp = make_client("gp", GP)
    refused = gp.post("QuestionnaireResponse", _top_reading(reference, opiates=3))
    assert refused.status_code == 403 and "recovery service" in refused.json()["issue"][0]["diagnostics"]
    out_of_range = recovery.post("QuestionnaireResponse", _top_reading(reference, opiates=29))
    assert out_of_range.status_code == 422 and "from 0 to 28" in out_of_range.json()["issue"][0]["diagnostics"]
    stored = one(recovery, f"QuestionnaireResponse?questionnaire={top_form().url}&_count=1")
    assert {t["code"] for t in stored["meta"]["tag"]} >= {"reviews", "substance-use"}


def test_overdue_top_readings_are_flagged_once_to_the_recovery_service_and_key_worker(app, make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    referral = refer(social, person(social, 3), "REF-TOP-2")
    task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    moved(social, task["id"], stage="initial-meeting", status="accepted")
    moved(social, task["id"], stage="resource-allocation", status="in-progress")
    assert decide(social, referral, "yes").status_code == 201
    moved(social, task["id"], stage="assessment")
    started = date.today()
    fhir = app.state.fhir
    assert raise_overdue_top_reviews(fhir, today=started + timedelta(days=14)) == []  # due within two weeks
    first_flag = raise_overdue_top_reviews(fhir, today=started + timedelta(days=15))
    assert len(first_flag) == 1
    flag = one(social, "Communication?category=review-overdue")
    assert flag["payload"][0]["contentString"] == f"The start-of-treatment TOP was due by {(started + timedelta(days=14)).isoformat()} and has not been recorded."
    assert flag["recipient"] == [{"reference": "Organization/dundee-recovery-service"}, {"reference": "PractitionerRole/kw-sarah-mcintyre"}]
    assert raise_overdue_top_reviews(fhir, today=started + timedelta(days=15)) == []  # once per due reading
    recovery = make_client("recovery-service", RECOVERY_SERVICE)
    assert recovery.post("QuestionnaireResponse", _top_reading(f"ServiceRequest/{referral['id']}", opiates=12)).status_code == 201
    # the start reading is now there; the first three-monthly review falls due 13 weeks + 2 on
    assert raise_overdue_top_reviews(fhir, today=started + timedelta(weeks=13, days=14)) == []
    review_flag = raise_overdue_top_reviews(fhir, today=started + timedelta(weeks=13, days=15))
    assert len(review_flag) == 1 and review_flag != first_flag


def test_only_the_owner_documents_clock_adjustments_and_they_must_be_readable(make_client) -> None:  # type: ignore[no-untyped-def]
    social = make_client("social-work", HSCP)
    referral = refer(social, person(social, 4), "REF-CLOCK-1")
    task = one(social, f"Task?focus=ServiceRequest/{referral['id']}")
    away = {"url": CLOCK_ADJUSTMENT, "extension": [
        {"url": "reason", "valueCoding": {"system": CLOCK_ADJUSTMENT_SYSTEM, "code": "unavailable"}},
        {"url": "period", "valuePeriod": {"start": "2026-07-05", "end": "2026-07-14"}},
    ]}
    backwards = {**away, "extension": [away["extension"][0], {"url": "period", "valuePeriod": {"start": "2026-07-05", "end": "2026-07-01"}}]}
    refused = move(social, task["id"], extension=[backwards])
    assert refused.status_code == 422 and "end date on or after its start" in refused.json()["issue"][0]["diagnostics"]
    moved(social, task["id"], extension=[away])
    # the referrer's organisation is a workflow party on the Task, but the clock is the owner's
    gp = make_client("gp", GP)
    gp_patient = person(social, 5)
    consent_for(social, gp_patient, GP)  # the GP sees the Task it requested in full
    gp_referral = refer(gp, gp_patient, "REF-CLOCK-2")
    gp_task = one(gp, f"Task?focus=ServiceRequest/{gp_referral['id']}")
    not_owner = move(gp, gp_task["id"], extension=[away])
    assert not_owner.status_code == 403 and "owns the referral" in not_owner.json()["issue"][0]["diagnostics"]
