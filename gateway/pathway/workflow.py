"""The pathway workflow as a write hook over the FHIR service: every rule runs inside the
write's own transaction, so a refused move changes nothing and a derived resource (the
pathway Task, an alert, a review's Observations) is never stored without its cause."""

from __future__ import annotations

from typing import Any

from gateway.fhir.service import WriteContext
from gateway.pathway import codes, stages
from gateway.pathway.alerts import early_exit_alert
from gateway.pathway.allocation import check_decision, record_decision
from gateway.pathway.clock import check_clock_adjustments
from gateway.pathway.context import PathwayContext, is_pathway
from gateway.pathway.moves import check_task_update, refuse, stage_of
from gateway.pathway.notify import notify
from gateway.pathway.records import by_referral, care_team, referral_id, task_kind
from gateway.pathway.referrals import hand_over, is_rehab_referral, open_pathway, prepare_referral, refer_to_community, refer_to_facility
from gateway.pathway.reviews import check_review, record_review
from gateway.pathway.top import check_top_reading, is_top_reading
from gateway.store.repository import Stored


class PathwayWorkflow:
    """The WriteHook that runs the residential rehabilitation pathway (DESIGN §1, §4, §7)."""

    def before_write(self, ctx: WriteContext, resource: dict[str, Any], previous: Stored | None) -> None:
        kind = resource["resourceType"]
        if kind == "Task" and not is_pathway(ctx.caller) and task_kind(resource) != (task_kind(previous.resource) if previous else None):
            # The waiting-times return and the workflow trust a Task's kind: only the pathway sets it.
            raise refuse(403, "pathway Tasks (Task.code in the task-type system) are created by the pathway itself; their kind cannot be set or changed", "Task.code")
        if kind == "QuestionnaireResponse" and previous is not None and not is_pathway(ctx.caller) and _what_it_answers(resource) != _what_it_answers(previous.resource):
            # Decisions, reviews and TOP readings are checked when recorded: a response may not become one later.
            raise refuse(403, "a QuestionnaireResponse's questionnaire and basedOn are fixed when it is recorded; record a new response instead", "QuestionnaireResponse.questionnaire")
        if kind == "ServiceRequest" and previous is not None and is_rehab_referral(resource) != is_rehab_referral(previous.resource):
            raise refuse(403, "a ServiceRequest becomes a rehab referral only when it is created as one (which opens the pathway)", "ServiceRequest.category")
        if kind == "ServiceRequest" and previous is None and is_rehab_referral(resource):
            prepare_referral(PathwayContext.of(ctx), resource)
        elif kind == "Task" and previous is not None:
            check_task_update(PathwayContext.of(ctx), resource, previous)
            if task_kind(previous.resource) == codes.PATHWAY_TASK:
                check_clock_adjustments(PathwayContext.of(ctx), resource, previous.resource)
        elif kind == "QuestionnaireResponse" and previous is None:
            questionnaire = resource.get("questionnaire")
            if questionnaire == codes.RESOURCE_ALLOCATION:
                check_decision(PathwayContext.of(ctx), resource)
            elif questionnaire == codes.OUTCOME_STAR and resource.get("basedOn"):
                # A pathway review; a reading with no referral behind it (a third-sector
                # key-work session) is a record of its own.
                check_review(PathwayContext.of(ctx), resource)
            elif is_top_reading(resource) and resource.get("basedOn"):
                check_top_reading(PathwayContext.of(ctx), resource)

    def after_write(self, ctx: WriteContext, stored: Stored, previous: Stored | None) -> None:
        kind = stored.type
        if kind == "ServiceRequest" and previous is None and is_rehab_referral(stored.resource):
            open_pathway(PathwayContext.of(ctx), stored)
        elif kind == "Task" and previous is not None:
            self._task_moved(PathwayContext.of(ctx), stored, previous)
        elif kind == "QuestionnaireResponse" and previous is None:
            questionnaire = stored.resource.get("questionnaire")
            if questionnaire == codes.RESOURCE_ALLOCATION:
                record_decision(PathwayContext.of(ctx), stored)
            elif questionnaire == codes.OUTCOME_STAR and stored.resource.get("basedOn"):
                record_review(PathwayContext.of(ctx), stored)

    def _task_moved(self, pc: PathwayContext, task: Stored, previous: Stored) -> None:
        kind = task_kind(previous.resource)
        if kind == codes.PATHWAY_TASK:
            pathway_moved(pc, task, previous)
        elif kind == codes.FACILITY_TASK and task.resource.get("status") != previous.resource.get("status"):
            facility_task_moved(pc, task)


def pathway_moved(pc: PathwayContext, task: Stored, previous: Stored) -> None:
    """Keep the EpisodeOfCare and CarePlan in step and start what the new stage needs."""
    resource = task.resource
    stage, status = stage_of(resource) or "referral", resource["status"]
    if stage == stage_of(previous.resource) and status == previous.resource.get("status"):
        return
    business_id = referral_id(resource) or ""
    care_plan = by_referral(pc.repo, "CarePlan", business_id)
    _sync_episode(pc, business_id, stage, status)
    if stage == stage_of(previous.resource):
        return
    team = care_team(care_plan.resource) if care_plan else {}
    notify(
        pc.ctx.session,
        "task-status",
        pc.keys_of([resource["requester"], *team.get(codes.KEY_WORKER, [])]),
        focus=task.reference,
        patient=task.patient,
    )
    if stage == "residential":
        refer_to_facility(pc, task, care_plan)
    elif stage == "alternative-pathway":
        refer_to_community(pc, task)
    elif stage == "community-recovery":
        hand_over(pc, task, care_plan)
    elif stage == "closed" and care_plan is not None:
        pc.derive(care_plan.resource | {"status": "completed"}, if_match=care_plan.version_id)


def _sync_episode(pc: PathwayContext, business_id: str, stage: str, task_status: str) -> None:
    episode = by_referral(pc.repo, "EpisodeOfCare", business_id)
    if episode is None:
        return
    resource = episode.resource
    others = [e for e in resource.get("extension", []) if e.get("url") != codes.STAGE_EXTENSION]
    resource["extension"] = others + [{"url": codes.STAGE_EXTENSION, "valueCoding": codes.coding(codes.STAGE_SYSTEM, stage)}]
    status = stages.episode_status(stage, task_status)
    if status != resource["status"]:
        resource.setdefault("statusHistory", []).append({"status": resource["status"], "period": {**resource.get("period", {}), "end": pc.instant}})
        resource["status"] = status
    if status in ("finished", "cancelled"):
        resource.setdefault("period", {})["end"] = pc.instant
    pc.derive(resource, if_match=episode.version_id)


def facility_task_moved(pc: PathwayContext, task: Stored) -> None:
    """Tell the referrer, key worker and advocate; on discharge move the pathway on (early exit: alert first)."""
    resource = task.resource
    pathway = pc.repo.read("Task", resource["partOf"][0]["reference"].split("/", 1)[1])
    care_plan = by_referral(pc.repo, "CarePlan", referral_id(pathway.resource) or "")
    team = care_team(care_plan.resource) if care_plan else {}
    notify(
        pc.ctx.session,
        "task-status",
        pc.keys_of([pathway.resource["requester"], *team.get(codes.KEY_WORKER, []), *team.get(codes.ADVOCATE, [])]),
        focus=task.reference,
        patient=task.patient,
    )
    if resource["status"] not in ("completed", "failed"):
        return
    if resource["status"] == "failed":
        early_exit_alert(pc, task, pathway, care_plan)
    if stage_of(pathway.resource) == "residential":
        moved = pathway.resource | {"businessStatus": codes.concept(codes.STAGE_SYSTEM, "community-recovery")}
        pc.derive(moved, if_match=pathway.version_id)


def _what_it_answers(response: dict[str, Any]) -> tuple[Any, Any]:
    return response.get("questionnaire"), response.get("basedOn")
