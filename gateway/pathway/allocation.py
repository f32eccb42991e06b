"""The resource allocation decision: a QuestionnaireResponse on the referral, recorded on
the pathway Task; "yes" opens assessment, "no" the community pathway."""

from __future__ import annotations

from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import codes, stages
from gateway.pathway.context import PathwayContext
from gateway.pathway.moves import decision_of, parties, refuse, stage_of
from gateway.pathway.records import task_for_request, task_kind
from gateway.store.repository import Stored

DECISIONS = ("yes", "no")
DECISION_OUTPUT = "resource-allocation-decision"


def pathway_task_of(pc: PathwayContext, response: dict[str, Any], what: str) -> Stored:
    """The Task of the ServiceRequest a QuestionnaireResponse is based on (422 when there is none)."""
    for based_on in response.get("basedOn", []):
        reference = str(based_on.get("reference", ""))
        if reference.startswith("ServiceRequest/") and (task := task_for_request(pc.repo, reference)) is not None:
            return task
    raise FhirError(422, f"a {what} QuestionnaireResponse needs basedOn = the ServiceRequest it belongs to", "required", "QuestionnaireResponse.basedOn")


def check_decision(pc: PathwayContext, response: dict[str, Any]) -> None:
    """Refuse a decision that is malformed, out of turn or not the rehab team's to make."""
    decision = decision_of(response)
    if decision not in DECISIONS:
        raise FhirError(422, 'the resource allocation decision needs item "decision" with valueCoding.code yes or no', "required", "QuestionnaireResponse.item")
    task = pathway_task_of(pc, response, "resource allocation")
    if task_kind(task.resource) != codes.PATHWAY_TASK:
        raise FhirError(422, "basedOn must be the rehab referral (its Task is the pathway Task)", "value", "QuestionnaireResponse.basedOn")
    if stages.Party.OWNER not in parties(pc, task.resource):
        raise refuse(403, "only the HSCP rehab team that owns the pathway Task records the resource allocation decision")
    if (stage := stage_of(task.resource)) != "resource-allocation":
        raise refuse(409, f"the pathway is at stage {stage}; the resource allocation decision is made at stage resource-allocation")
    response.setdefault("subject", task.resource["for"])
    response.setdefault("authored", pc.instant)


def record_decision(pc: PathwayContext, response: Stored) -> None:
    """Link the decision from the pathway Task's outputs."""
    task = pathway_task_of(pc, response.resource, "resource allocation")
    updated = task.resource
    updated.setdefault("output", []).append(
        {"type": {"text": DECISION_OUTPUT}, "valueReference": {"reference": response.reference}}
    )
    pc.derive(updated, if_match=task.version_id)
