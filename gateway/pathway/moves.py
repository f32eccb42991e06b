"""Checking a Task update before it is stored: the FHIR state machine, who is moving it,
and for pathway and facility Tasks the stage graph and what each move needs."""

from __future__ import annotations

from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import codes, stages
from gateway.pathway.context import PathwayContext
from gateway.pathway.records import first, task_kind
from gateway.pathway.referrals import alternative_agency, task_input
from gateway.store.repository import Stored

# Elements that say what a Task is and whom it concerns: an update may not change them.
FIXED_ELEMENTS = ("for", "focus", "owner", "requester", "code", "partOf", "identifier")


def refuse(status: int, message: str, expression: str | None = None) -> FhirError:
    return FhirError(status, message, "forbidden" if status == 403 else "business-rule", expression)


def stage_of(task: dict[str, Any]) -> str | None:
    return codes.code_of(task.get("businessStatus"), codes.STAGE_SYSTEM)


def parties(pc: PathwayContext, task: dict[str, Any]) -> frozenset[stages.Party]:
    """The roles the caller holds on a Task."""
    held = set()
    if pc.caller_is(task.get("owner")):
        held.add(stages.Party.OWNER)
    if pc.caller_is(task.get("requester")):
        held.add(stages.Party.REQUESTER)
    return frozenset(held)


def check_task_update(pc: PathwayContext, task: dict[str, Any], previous: Stored) -> None:
    """Refuse (409/403 FhirError) an update the workflow does not allow; stamps lastModified."""
    before = previous.resource
    for element in FIXED_ELEMENTS:
        if task.get(element) != before.get(element):
            raise refuse(409, f"Task.{element} cannot be changed by an update; cancel this Task and create another instead", f"Task.{element}")
    kind = task_kind(before)
    if kind == codes.PATHWAY_TASK and (problem := stages.stage_move_problem(stage_of(before) or "referral", stage_of(task) or "")):
        raise refuse(409, problem, "Task.businessStatus")
    old, new = before.get("status", ""), task.get("status", "")
    if problem := stages.status_move_problem(old, new):
        raise refuse(409, problem, "Task.status")
    held = parties(pc, before)
    if problem := stages.status_actor_problem(old, new, held):
        raise refuse(403, problem, "Task.status")
    if kind == codes.PATHWAY_TASK:
        _check_pathway_move(pc, task, before, held)
    elif kind == codes.FACILITY_TASK and old != new:
        _check_facility_move(task, new)
    task["lastModified"] = pc.instant


def _check_pathway_move(pc: PathwayContext, task: dict[str, Any], before: dict[str, Any], held: frozenset[stages.Party]) -> None:
    """The rest of a pathway move, once the stage graph allows it."""
    old_stage, new_stage = stage_of(before) or "referral", stage_of(task) or ""
    if new_stage != old_stage and stages.Party.OWNER not in held:
        raise refuse(403, "only the HSCP rehab team that owns the pathway Task moves its stage", "Task.businessStatus")
    if problem := stages.stage_status_problem(new_stage, task.get("status", "")):
        raise refuse(409, problem, "Task.status")
    if new_stage == old_stage:
        return
    if problem := stages.decision_problem(new_stage, allocation_decision(pc, task)):
        raise refuse(409, problem, "Task.businessStatus")
    if new_stage == "residential" and task_input(task, "facility") is None:
        raise refuse(409, 'moving to residential needs a Task.input with type.text "facility" and valueReference the chosen Organization', "Task.input")
    if new_stage == "alternative-pathway" and alternative_agency(pc, task) is None:
        raise refuse(409, 'moving to alternative-pathway needs a Task.input with type.text "agency" (the third-sector agency), or alternative_pathway_agency in pathway.yaml', "Task.input")


def _check_facility_move(task: dict[str, Any], new: str) -> None:
    period = task.get("executionPeriod") or {}
    if new == "rejected" and not (task.get("statusReason") or {}).get("coding"):
        raise refuse(409, "a rejected facility referral needs a coded Task.statusReason saying why", "Task.statusReason")
    if new == "in-progress" and not period.get("start"):
        raise refuse(409, "admission (status in-progress) needs Task.executionPeriod.start = the admission date", "Task.executionPeriod.start")
    if new in ("completed", "failed") and not period.get("end"):
        raise refuse(409, f"discharge (status {new}) needs Task.executionPeriod.end = the date the stay ended", "Task.executionPeriod.end")
    if new == "failed" and not codes.has_code(task.get("statusReason"), codes.TASK_REASON_SYSTEM, codes.EARLY_EXIT):
        raise refuse(409, f"an unplanned discharge (status failed) needs Task.statusReason {codes.TASK_REASON_SYSTEM}|{codes.EARLY_EXIT}", "Task.statusReason")


def allocation_decision(pc: PathwayContext, task: dict[str, Any]) -> str | None:
    """The yes/no of the latest resource allocation decision on the pathway's referral, if any."""
    latest = first(pc.repo, "QuestionnaireResponse", [("based-on", [task["focus"]["reference"]]), ("questionnaire", [codes.RESOURCE_ALLOCATION])])
    return decision_of(latest.resource) if latest is not None else None


def decision_of(response: dict[str, Any]) -> str | None:
    """The ``decision`` item's code in a resource allocation QuestionnaireResponse."""
    for item in response.get("item", []):
        if item.get("linkId") == "decision":
            for answer in item.get("answer", []):
                code = (answer.get("valueCoding") or {}).get("code")
                if code:
                    return str(code)
    return None
