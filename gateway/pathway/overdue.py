"""Overdue reviews: a stay whose review has not been recorded by its due date raises a
``review-overdue`` Communication to the facility and the key worker (once per due date)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.audit.chain import append, audit_event
from gateway.fhir.service import FhirService
from gateway.pathway import codes
from gateway.pathway.context import PathwayContext
from gateway.pathway.metrics import Stay
from gateway.pathway.notify import notify
from gateway.pathway.records import by_referral, care_team, first, referral_id
from gateway.store.repository import Stored

OVERDUE_SYSTEM = "https://pathway.scot/Id/review-overdue"


def first_missed_review(stay: Stay, interval_weeks: int, residential_weeks: int, today: date) -> tuple[int, date] | None:
    """(k, due date) of the earliest review due before ``today`` that was not held by then."""
    end = min(stay.admitted + timedelta(weeks=residential_weeks), today)
    k = 1
    while (due := stay.admitted + timedelta(weeks=interval_weeks * k)) < end:
        if sum(1 for held in stay.reviews if held <= due) < k:
            return k, due
        k += 1
    return None


def raise_overdue_reviews(fhir: FhirService, today: date | None = None) -> list[str]:
    """Scan residential stays in progress and raise any new overdue-review flags; returns their references."""
    with fhir.gateway.transaction() as session:
        pc = PathwayContext.background(session, fhir.gateway.repository(session), fhir)
        today = today or pc.today
        raised = [flag.reference for _, task in pc.repo.search("Task", [("code", [f"{codes.TASK_TYPE_SYSTEM}|{codes.FACILITY_TASK}"]), ("status", ["in-progress"])]) if (flag := _check_stay(pc, task, today))]
        if raised:
            append(session, audit_event("operation", None, detail=f"overdue reviews flagged: {len(raised)}", entities=raised))
    return raised


def _check_stay(pc: PathwayContext, task: Stored, today: date) -> Stored | None:
    resource = task.resource
    reviews = [
        date.fromisoformat(str((s.resource.get("period") or {}).get("start"))[:10])
        for _, s in pc.repo.search("Encounter", [("based-on", [resource["focus"]["reference"]])])
        if (s.resource.get("period") or {}).get("start")
    ]
    admitted = date.fromisoformat(str(resource["executionPeriod"]["start"])[:10])
    missed = first_missed_review(Stay(admitted, None, False, reviews), pc.conf.review_interval_weeks, pc.conf.residential_weeks, today)
    if missed is None:
        return None
    k, due = missed
    pathway = pc.repo.read("Task", resource["partOf"][0]["reference"].split("/", 1)[1])
    care_plan = by_referral(pc.repo, "CarePlan", referral_id(pathway.resource) or "")
    key_workers = care_team(care_plan.resource).get(codes.KEY_WORKER, []) if care_plan else []
    text = f"Review {k} of the residential stay was due on {due.isoformat()} and has not been recorded."
    return raise_overdue_flag(pc, task, OVERDUE_SYSTEM, k, [resource["owner"], *key_workers], text)


def raise_overdue_flag(pc: PathwayContext, task: Stored, system: str, k: int, recipients: list[dict[str, Any]], text: str) -> Stored | None:
    """A ``review-overdue`` Communication about ``task``'s ``k``-th missed reading, sent to
    ``recipients`` once: None when one with the same identifier was raised before."""
    identifier = {"system": system, "value": f"{task.id}/{k}"}
    if first(pc.repo, "Communication", [("identifier", [f"{system}|{identifier['value']}"])]) is not None:
        return None
    flag = pc.derive(
        {
            "resourceType": "Communication",
            "identifier": [identifier],
            "status": "completed",
            "priority": "asap",
            "category": [codes.concept(codes.COMMUNICATION_CATEGORY_SYSTEM, codes.REVIEW_OVERDUE)],
            "subject": task.resource["for"],
            "about": [{"reference": task.reference}],
            "sent": pc.instant,
            "recipient": recipients,
            "payload": [{"contentString": text}],
        }
    )
    notify(pc.ctx.session, "review", pc.keys_of(recipients), focus=flag.reference, patient=flag.patient)
    return flag
