"""Referrals: opening a pathway from a rehab referral, and the referrals the pathway makes
onwards (to the chosen facility, to a third-sector agency, and the post-rehab handovers).

A rehab referral is a ServiceRequest with category request-category|rehab-referral; the
optional parts of the referral form ride on it as::

    reasonCode.text                      the reason; reasonCode.coding substance|alcohol, ...
    extension preferred-facility         valueReference Organization (repeatable)
    extension detox-required             valueBoolean
    extension goal                       valueString (repeatable; the person's own words)
    extension contingency-plan           valueString (what to do on early exit)
    extension key-worker                 valueReference (defaults to the referring organisation)
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import codes
from gateway.pathway.context import PathwayContext
from gateway.pathway.notify import notify
from gateway.pathway.records import by_referral, care_team, organization_ref, referral_id
from gateway.store.repository import Stored
from mappings.identifiers import REFERRAL_SYSTEM


def is_rehab_referral(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "ServiceRequest" and codes.has_code(
        resource.get("category"), codes.REQUEST_CATEGORY_SYSTEM, codes.REHAB_REFERRAL
    )


def prepare_referral(pc: PathwayContext, referral: dict[str, Any]) -> None:
    """Check a new rehab referral and give it a business identifier and date if it has none."""
    subject = str((referral.get("subject") or {}).get("reference", ""))
    if not subject.startswith("Patient/"):
        raise FhirError(422, "a rehab referral's subject must be the Patient referred (Patient/{id})", "required", "ServiceRequest.subject")
    business_id = referral_id(referral)
    if business_id is None:
        business_id = f"REF-{uuid.uuid4().hex[:12].upper()}"
        referral.setdefault("identifier", []).append({"system": REFERRAL_SYSTEM, "value": business_id})
    elif by_referral(pc.repo, "ServiceRequest", business_id) is not None:
        raise FhirError(409, f"referral {business_id} already exists; update it instead of referring again", "duplicate", "ServiceRequest.identifier")
    referral.setdefault("authoredOn", pc.instant)


def open_pathway(pc: PathwayContext, referral: Stored) -> Stored:
    """In the referral's transaction: the pathway Task, EpisodeOfCare and CarePlan; tells the rehab team."""
    request = referral.resource
    business_id = {"system": REFERRAL_SYSTEM, "value": referral_id(request)}
    referrer = organization_ref(pc.repo, pc.ctx.caller.organization)
    started = request["authoredOn"]
    task = pc.derive(
        {
            "resourceType": "Task",
            "identifier": [business_id],
            "status": "requested",
            "intent": "order",
            "priority": request.get("priority", "routine"),
            "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.PATHWAY_TASK),
            "businessStatus": codes.concept(codes.STAGE_SYSTEM, "referral"),
            "description": "Residential rehabilitation pathway",
            "focus": {"reference": referral.reference},
            "for": request["subject"],
            "authoredOn": started,
            "lastModified": pc.instant,
            "requester": referrer,
            "owner": pc.rehab_team_ref,
        }
    )
    pc.derive(
        {
            "resourceType": "EpisodeOfCare",
            "identifier": [business_id],
            "status": "planned",
            "type": [codes.concept(codes.EPISODE_TYPE_SYSTEM, "residential-rehab-pathway")],
            "extension": [{"url": codes.STAGE_EXTENSION, "valueCoding": codes.coding(codes.STAGE_SYSTEM, "referral")}],
            "patient": request["subject"],
            "managingOrganization": pc.rehab_team_ref,
            "period": {"start": started},
            "referralRequest": [{"reference": referral.reference}],
        }
    )
    pc.derive(_care_plan(pc, request, referral.reference, business_id, referrer))
    notify(pc.ctx.session, "referral", [pc.rehab_team_key], focus=task.reference, patient=task.patient, include=[referral.reference])
    return task


def _care_plan(
    pc: PathwayContext, request: dict[str, Any], referral_ref: str, business_id: dict[str, str], referrer: dict[str, Any]
) -> dict[str, Any]:
    """The person's own plan: goals, care team, contingency plan and the supports to hand over to."""
    subject = request["subject"]
    goals = [
        {"resourceType": "Goal", "id": f"goal-{n}", "lifecycleStatus": "proposed", "description": {"text": text}, "subject": subject}
        for n, text in enumerate(codes.extension_values(request, codes.GOAL, "valueString"), start=1)
    ]
    team = {codes.KEY_WORKER: _key_worker(pc, request, referrer), codes.COMMUNITY_TEAM: _organization(pc.conf.community_team) or pc.rehab_team_ref}
    if advocate := _organization(pc.conf.advocacy_service):
        team[codes.ADVOCATE] = advocate
    care_team_resource = {
        "resourceType": "CareTeam",
        "id": "team",
        "status": "active",
        "subject": subject,
        "participant": [
            {"role": [codes.concept(codes.CARE_TEAM_ROLE_SYSTEM, role)], "member": member} for role, member in team.items()
        ],
    }
    activities = [_activity(codes.PLAN_ACTIVITY_SYSTEM, "contingency-plan", text) for text in codes.extension_values(request, codes.CONTINGENCY_PLAN, "valueString")]
    if True in codes.extension_values(request, codes.DETOX_REQUIRED, "valueBoolean"):
        activities.append(_activity(codes.PLAN_ACTIVITY_SYSTEM, "detox", "Detox plan before admission"))
    for support in codes.HANDOVER_SUPPORTS:
        performer = {"reference": f"Organization/{pc.conf.handover[support]}"} if support in pc.conf.handover else pc.rehab_team_ref
        activities.append(_activity(codes.HANDOVER_SYSTEM, support, f"Handover to {support} support after rehab", performer))
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "identifier": [business_id],
        "status": "active",
        "intent": "plan",
        "title": "Recovery plan",
        "subject": subject,
        "period": {"start": request["authoredOn"]},
        "author": pc.rehab_team_ref,
        "contained": [care_team_resource, *goals],
        "careTeam": [{"reference": "#team"}],
        "goal": [{"reference": f"#{g['id']}"} for g in goals],
        "activity": activities,
        "supportingInfo": [{"reference": referral_ref}],
    }
    return {k: v for k, v in plan.items() if v != []}


def _organization(organization_id: str | None) -> dict[str, str] | None:
    return {"reference": f"Organization/{organization_id}"} if organization_id else None


def _key_worker(pc: PathwayContext, request: dict[str, Any], referrer: dict[str, Any]) -> dict[str, Any]:
    """The key worker the referral names, else pathway.yaml's duty key worker, else the referrer."""
    named = codes.extension_values(request, codes.KEY_WORKER_EXTENSION, "valueReference")
    if named:
        return named[0]
    if pc.conf.duty_key_worker:
        return {"reference": f"PractitionerRole/{pc.conf.duty_key_worker}"}
    return referrer


def _activity(system: str, code: str, description: str, performer: dict[str, Any] | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": codes.concept(system, code), "status": "not-started", "description": description}
    if performer:
        detail["performer"] = [performer]
    return {"detail": detail}


def contingency_plan(care_plan: dict[str, Any]) -> str | None:
    """The plan's contingency plan for an early exit, in its own words."""
    for activity in care_plan.get("activity", []):
        detail = activity.get("detail") or {}
        if codes.has_code(detail.get("code"), codes.PLAN_ACTIVITY_SYSTEM, "contingency-plan"):
            return detail.get("description")
    return None


def task_input(task: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The valueReference of the Task input whose type.text is ``name``."""
    return next((i.get("valueReference") for i in task.get("input", []) if (i.get("type") or {}).get("text") == name), None)


def refer_onward(
    pc: PathwayContext,
    pathway_task: Stored,
    organization: dict[str, Any],
    *,
    category: str,
    kind: str,
    event: str,
    description: str,
    supporting: list[str] = (),  # type: ignore[assignment]
) -> Stored:
    """A ServiceRequest + Task (owner ``organization``, part of the pathway Task) and a notice to the new owner."""
    pathway = pathway_task.resource
    request = pc.derive(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "category": [codes.concept(codes.REQUEST_CATEGORY_SYSTEM, category)],
            "subject": pathway["for"],
            "requester": pc.rehab_team_ref,
            "performer": [organization],
            "basedOn": [pathway["focus"]],
            "authoredOn": pc.instant,
            "supportingInfo": [{"reference": ref} for ref in supporting],
        }
    )
    task = pc.derive(
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": codes.concept(codes.TASK_TYPE_SYSTEM, kind),
            "description": description,
            "focus": {"reference": request.reference},
            "for": pathway["for"],
            "partOf": [{"reference": pathway_task.reference}],
            "authoredOn": pc.instant,
            "requester": pc.rehab_team_ref,
            "owner": organization,
        }
    )
    notify(pc.ctx.session, event, pc.keys_of([organization]), focus=task.reference, patient=task.patient, include=[request.reference])
    return task


def refer_to_facility(pc: PathwayContext, pathway_task: Stored, care_plan: Stored | None) -> Stored:
    """The facility referral when the pathway reaches residential (needs Task.input "facility")."""
    facility = task_input(pathway_task.resource, "facility")
    assert facility is not None  # checked before the move was stored
    return refer_onward(
        pc,
        pathway_task,
        facility,
        category=codes.FACILITY_REFERRAL,
        kind=codes.FACILITY_TASK,
        event="facility-referral",
        description="Residential rehabilitation: 12-week stay",
        supporting=[care_plan.reference] if care_plan else [],
    )


def refer_to_community(pc: PathwayContext, pathway_task: Stored) -> Stored:
    """The third-sector referral when the allocation decision routes to the community pathway."""
    agency = alternative_agency(pc, pathway_task.resource)
    assert agency is not None  # checked before the move was stored
    return refer_onward(
        pc,
        pathway_task,
        agency,
        category=codes.COMMUNITY_REFERRAL,
        kind=codes.COMMUNITY_TASK,
        event="referral",
        description="Community recovery support, harm reduction and safety planning",
    )


def alternative_agency(pc: PathwayContext, pathway: dict[str, Any]) -> dict[str, Any] | None:
    """The agency for the community pathway: Task.input "agency", else pathway.yaml's."""
    chosen = task_input(pathway, "agency")
    if chosen is None and pc.conf.alternative_pathway_agency:
        chosen = {"reference": f"Organization/{pc.conf.alternative_pathway_agency}"}
    return chosen


def hand_over(pc: PathwayContext, pathway_task: Stored, care_plan: Stored | None) -> list[Stored]:
    """One Task per post-rehab support in the plan (counselling, housing, carers' support, employability)."""
    handovers = []
    for activity in (care_plan.resource if care_plan else {}).get("activity", []):
        detail = activity.get("detail") or {}
        support = codes.code_of(detail.get("code"), codes.HANDOVER_SYSTEM)
        if support is None:
            continue
        owner = (detail.get("performer") or [pc.rehab_team_ref])[0]
        task = pc.derive(
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "code": codes.concept(codes.TASK_TYPE_SYSTEM, codes.HANDOVER_TASK),
                "businessStatus": codes.concept(codes.HANDOVER_SYSTEM, support),
                "description": detail.get("description", support),
                "focus": {"reference": care_plan.reference},  # type: ignore[union-attr]
                "for": pathway_task.resource["for"],
                "partOf": [{"reference": pathway_task.reference}],
                "authoredOn": pc.instant,
                "requester": pc.rehab_team_ref,
                "owner": owner,
            }
        )
        notify(pc.ctx.session, "referral", pc.keys_of([owner]), focus=task.reference, patient=task.patient)
        handovers.append(task)
    return handovers


def plan_team(care_plan: Stored | None) -> dict[str, list[dict[str, Any]]]:
    return care_team(care_plan.resource) if care_plan else {}
