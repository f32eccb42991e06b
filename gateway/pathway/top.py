"""TOP readings on the pathway: the Treatment Outcomes Profile recorded at the start of
treatment, every three months and at exit, by the recovery service or the facility; a
reading not recorded by its due date is flagged like an overdue Outcome Star review.

A reading is a QuestionnaireResponse of the TOP Questionnaire (``mappings/codes/top.yaml``)
with ``basedOn`` = the rehab referral or the facility referral. It may be recorded by the
organisation that owns that referral's Task (the HSCP rehab team, or the facility) or by
the community recovery service named in pathway.yaml.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.audit.chain import append, audit_event
from gateway.fhir.outcomes import FhirError
from gateway.fhir.service import FhirService
from gateway.pathway import codes, stages
from gateway.pathway.allocation import pathway_task_of
from gateway.pathway.context import PathwayContext
from gateway.pathway.moves import parties, refuse
from gateway.pathway.overdue import raise_overdue_flag
from gateway.pathway.records import by_referral, care_team, referral_id
from gateway.store.repository import Stored
from mappings.top import read_top, top_form


def is_top_reading(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "QuestionnaireResponse" and resource.get("questionnaire") == top_form().url


def check_top_reading(pc: PathwayContext, response: dict[str, Any]) -> None:
    """Refuse a TOP reading that is malformed or not recorded by a service that treats the person."""
    try:
        read_top(response)
    except ValueError as error:
        raise FhirError(422, f"TOP reading: {error}", "value", "QuestionnaireResponse.item") from None
    task = pathway_task_of(pc, response, "TOP")
    community = pc.conf.community_team
    treats = stages.Party.OWNER in parties(pc, task.resource) or (community is not None and pc.ctx.caller.organization == pc.org_key(community))
    if not treats:
        raise refuse(403, "a TOP reading is recorded by the recovery service or by the service that owns the referral (the rehab team, or the facility)")
    response.setdefault("subject", task.resource["for"])
    response.setdefault("authored", pc.instant)


# --- overdue TOP readings ----------------------------------------------------------------------

TOP_OVERDUE_SYSTEM = "https://pathway.scot/Id/top-overdue"
GRACE = timedelta(days=14)  # a reading is due within two weeks of its date


def first_missed_top(started: date, readings: list[date], interval_weeks: int, today: date) -> tuple[int, date] | None:
    """(k, due date) of the earliest TOP reading due before ``today`` that was not recorded
    by then: k = 0 at the start of treatment, then one every ``interval_weeks``."""
    k = 0
    while (due := started + timedelta(weeks=interval_weeks * k) + GRACE) < today:
        if sum(1 for held in readings if held <= due) < k + 1:
            return k, due
        k += 1
    return None


def raise_overdue_top_reviews(fhir: FhirService, today: date | None = None) -> list[str]:
    """Scan pathways in treatment and raise any new overdue-TOP flags (to the recovery service
    and the key worker, once per due reading); returns their references."""
    with fhir.gateway.transaction() as session:
        pc = PathwayContext.background(session, fhir.gateway.repository(session), fhir)
        today = today or pc.today
        criteria = [("code", [f"{codes.TASK_TYPE_SYSTEM}|{codes.PATHWAY_TASK}"]), ("status", ["in-progress"])]
        raised = [flag.reference for _, task in pc.repo.search("Task", criteria) if (flag := _check_pathway(pc, task, today))]
        if raised:
            append(session, audit_event("operation", None, detail=f"overdue TOP readings flagged: {len(raised)}", entities=raised))
    return raised


def _check_pathway(pc: PathwayContext, task: Stored, today: date) -> Stored | None:
    resource = task.resource
    url = top_form().url
    decided: date | None = None
    readings = []
    for _, stored in pc.repo.search("QuestionnaireResponse", [("based-on", [resource["focus"]["reference"]])]):
        response = stored.resource
        authored = date.fromisoformat(str(response.get("authored"))[:10]) if response.get("authored") else None
        if authored is None:
            continue
        if response.get("questionnaire") == url:
            readings.append(authored)
        elif response.get("questionnaire") == codes.RESOURCE_ALLOCATION:
            decided = min(decided or authored, authored)
    if decided is None:
        return None
    missed = first_missed_top(decided, readings, top_form().review_interval_weeks, today)
    if missed is None:
        return None
    k, due = missed
    care_plan = by_referral(pc.repo, "CarePlan", referral_id(resource) or "")
    team = care_team(care_plan.resource) if care_plan else {}
    recipients = team.get(codes.COMMUNITY_TEAM, []) + team.get(codes.KEY_WORKER, []) or [resource["owner"]]
    which = "the start-of-treatment TOP" if k == 0 else f"three-monthly TOP review {k}"
    text = f"{which[0].upper()}{which[1:]} was due by {due.isoformat()} and has not been recorded."
    return raise_overdue_flag(pc, task, TOP_OVERDUE_SYSTEM, k, recipients, text)
