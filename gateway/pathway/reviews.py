"""Client-led reviews during the residential stay: the facility's Outcome Star reading
becomes a review Encounter and one Observation per area, routed to the key worker and
advocate; consented carers get only a carer-safe summary (date, attendance, next date).

Reading items: ``linkId`` = area code (valueInteger 1-10); optionally ``attended``
(valueBoolean, default true), ``next-review`` (valueDate), ``notes`` (valueString).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import codes, stages
from gateway.pathway.alerts import tell_carers
from gateway.pathway.allocation import pathway_task_of
from gateway.pathway.carers import consented_carers
from gateway.pathway.context import PathwayContext
from gateway.pathway.moves import parties, refuse
from gateway.pathway.notify import notify
from gateway.pathway.records import by_referral, care_team, referral_id, task_kind
from gateway.store.repository import Stored

REVIEW_CLASS = {"system": codes.ENCOUNTER_CLASS_SYSTEM, "code": "review", "display": "Client-led review"}


def _answer(item: dict[str, Any], key: str) -> Any:
    return next((a[key] for a in item.get("answer", []) if key in a), None)


def star_scores(response: dict[str, Any]) -> dict[str, int]:
    """Area -> score; 422 naming the item when a score is missing or outside 1-10."""
    scores: dict[str, int] = {}
    for index, item in enumerate(response.get("item", [])):
        area = item.get("linkId")
        if area not in codes.OUTCOME_STAR_AREAS:
            continue
        score = _answer(item, "valueInteger")
        if not isinstance(score, int) or not 1 <= score <= 10:
            raise FhirError(422, f"Outcome Star area {area}: the score must be a valueInteger from 1 to 10, not {score!r}", "value", f"QuestionnaireResponse.item[{index}]")
        scores[area] = score
    if not scores:
        raise FhirError(422, f"an Outcome Star reading needs at least one item whose linkId is an area ({', '.join(codes.OUTCOME_STAR_AREAS)})", "required", "QuestionnaireResponse.item")
    return scores


def check_review(pc: PathwayContext, response: dict[str, Any]) -> None:
    """Refuse a reading that is malformed, not the facility's, or outside a stay."""
    star_scores(response)
    task = pathway_task_of(pc, response, "Outcome Star")
    if task_kind(task.resource) != codes.FACILITY_TASK:
        raise FhirError(422, "an Outcome Star reading's basedOn must be the facility referral (ServiceRequest)", "value", "QuestionnaireResponse.basedOn")
    if stages.Party.OWNER not in parties(pc, task.resource):
        raise refuse(403, "only the facility that owns the referral records its reviews")
    if task.resource.get("status") not in ("in-progress", "on-hold"):
        raise refuse(409, f"reviews are recorded during the stay; the facility Task is {task.resource.get('status')}")
    response.setdefault("subject", task.resource["for"])
    response.setdefault("authored", pc.instant)


def record_review(pc: PathwayContext, response: Stored) -> Stored:
    """Derive the review Encounter and Observations, and route the review."""
    reading = response.resource
    facility_task = pathway_task_of(pc, reading, "Outcome Star")
    task = facility_task.resource
    pathway_ref = task["partOf"][0]["reference"]
    pathway = pc.repo.read("Task", pathway_ref.split("/", 1)[1]).resource
    business_id = referral_id(pathway) or ""
    episode = by_referral(pc.repo, "EpisodeOfCare", business_id)
    held = reading["authored"]
    encounter = pc.ctx.store(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": REVIEW_CLASS,
            "subject": task["for"],
            "period": {"start": held, "end": held},
            "basedOn": [task["focus"]],
            "serviceProvider": task["owner"],
        }
        | ({"episodeOfCare": [{"reference": episode.reference}]} if episode else {})
    )
    observations = [
        pc.ctx.store(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [codes.concept("http://terminology.hl7.org/CodeSystem/observation-category", "survey")],
                "code": codes.concept(codes.OUTCOME_STAR_SYSTEM, area),
                "subject": task["for"],
                "encounter": {"reference": encounter.reference},
                "effectiveDateTime": held,
                "valueInteger": score,
                "derivedFrom": [{"reference": response.reference}],
                "performer": [task["owner"]],
            }
        )
        for area, score in star_scores(reading).items()
    ]
    care_plan = by_referral(pc.repo, "CarePlan", business_id)
    team = care_team(care_plan.resource) if care_plan else {}
    notify(
        pc.ctx.session,
        "review",
        pc.keys_of([*team.get(codes.KEY_WORKER, []), *team.get(codes.ADVOCATE, [])]),
        focus=encounter.reference,
        patient=encounter.patient,
        include=[response.reference, *(o.reference for o in observations)],
    )
    _summary_for_carers(pc, reading, task)
    return encounter


def _summary_for_carers(pc: PathwayContext, reading: dict[str, Any], task: dict[str, Any]) -> Stored | None:
    """The carer-safe summary: the date held, whether the person attended, the next date."""
    carers = consented_carers(pc.repo, task["for"]["reference"], pc.today)
    if not carers:
        return None
    items = {item.get("linkId"): item for item in reading.get("item", [])}
    attended = _answer(items.get("attended", {}), "valueBoolean")
    held = date.fromisoformat(reading["authored"][:10])
    next_date = _answer(items.get("next-review", {}), "valueDate") or (held + timedelta(weeks=pc.conf.review_interval_weeks)).isoformat()
    portal = [{"reference": f"Organization/{pc.conf.carer_portal}"}] if pc.conf.carer_portal else []
    summary = pc.derive(
        {
            "resourceType": "Communication",
            "status": "completed",
            "category": [codes.concept(codes.COMMUNICATION_CATEGORY_SYSTEM, codes.REVIEW_SUMMARY)],
            "subject": task["for"],
            "sent": pc.instant,
            "sender": task["owner"],
            "recipient": [{"reference": carer} for carer in carers] + portal,
            "payload": [
                {"contentString": f"Review held on {held.isoformat()}"},
                {"contentString": "Attended: " + ("no" if attended is False else "yes")},
                {"contentString": f"Next review: {next_date}"},
            ],
        }
    )
    tell_carers(pc, "review-summary", summary, carers)
    return summary
