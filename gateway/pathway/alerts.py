"""Contingency alerts on early exit, and overdue-review warnings.

Early exit from residential rehab is the most dangerous moment (tolerance is low,
overdose risk high): the alert is raised in the very transaction that records it, and
its clocks start (``gateway.delivery.escalation``): a recipient organisation acknowledges
it with ``POST /fhir/Communication/{id}/$ack``, else it is escalated.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.delivery.models import UrgentAlertRow
from gateway.fhir.access import AccessPolicy, Caller
from gateway.fhir.outcomes import FhirError
from gateway.pathway import codes
from gateway.pathway.carers import consented_carers
from gateway.pathway.context import PathwayContext
from gateway.pathway.notify import notify
from gateway.pathway.records import care_team, organization_keys
from gateway.pathway.referrals import contingency_plan
from gateway.store.repository import Repository, Stored, fhir_instant
from mappings.labels import CATEGORY_SYSTEM, SENSITIVITY_SYSTEM


def _unique(references: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for reference in references:
        seen.setdefault(str(reference.get("reference") or reference.get("identifier")), reference)
    return list(seen.values())


def tell_carers(pc: PathwayContext, event: str, focus: Stored, carers: list[str]) -> None:
    """Queue ``event`` for each consented carer through the carers' portal organisation."""
    if not carers or not pc.conf.carer_portal:
        return
    portal = pc.org_key(pc.conf.carer_portal)
    for carer in carers:
        notify(pc.ctx.session, event, [portal], focus=focus.reference, patient=focus.patient, purpose="carer-support", acting_for=carer)


def early_exit_alert(pc: PathwayContext, facility_task: Stored, pathway_task: Stored, care_plan: Stored | None) -> Stored:
    """The urgent contingency alert to the pathway owner, key worker, community team and consented carers."""
    task, plan = facility_task.resource, care_plan.resource if care_plan else {}
    team = care_team(plan)
    organizations = _unique([pathway_task.resource["owner"], *team.get(codes.KEY_WORKER, []), *team.get(codes.COMMUNITY_TEAM, [])])
    patient = task["for"]["reference"]
    carers = consented_carers(pc.repo, patient, pc.today)
    ended = task["executionPeriod"]["end"]
    plan_text = contingency_plan(plan) or "no contingency plan is recorded: contact the person today"
    alert = pc.derive(
        {
            "resourceType": "Communication",
            # It carries the contingency plan: substance-use information, whatever the category says.
            "meta": {"tag": [codes.coding(CATEGORY_SYSTEM, "substance-use")], "security": [codes.coding(SENSITIVITY_SYSTEM, "SUD")]},
            "status": "completed",
            "priority": "urgent",
            "category": [codes.concept(codes.COMMUNICATION_CATEGORY_SYSTEM, codes.CONTINGENCY_ALERT)],
            "subject": task["for"],
            "about": [{"reference": facility_task.reference}, {"reference": pathway_task.reference}],
            "sent": pc.instant,
            "sender": task["owner"],
            "recipient": organizations,
            "payload": [
                {"contentString": f"Early exit from residential rehabilitation on {ended[:10]}. Tolerance is low and overdose risk high."},
                {"contentString": f"Contingency plan: {plan_text}"},
            ],
        }
    )
    notify(pc.ctx.session, "contingency-alert", pc.keys_of(organizations), focus=alert.reference, patient=alert.patient, purpose="TREAT")
    # Its clocks start now: late delivery or acknowledgement is escalated (gateway.delivery.escalation).
    pc.ctx.session.add(UrgentAlertRow(focus=alert.reference, patient=alert.patient, raised=pc.now))
    if carers:
        # Carers get a carer-safe alert (pathway progress only): that the stay ended and whom to call.
        carer_alert = pc.derive(
            {
                "resourceType": "Communication",
                "status": "completed",
                "priority": "urgent",
                "category": [codes.concept(codes.COMMUNICATION_CATEGORY_SYSTEM, codes.CONTINGENCY_ALERT)],
                "subject": task["for"],
                "about": [{"reference": pathway_task.reference}],
                "sent": pc.instant,
                "sender": pathway_task.resource["owner"],
                "recipient": [{"reference": carer} for carer in carers],
                "payload": [
                    {"contentString": f"The residential stay ended early on {ended[:10]}. The key worker has been told; please contact them today."}
                ],
            }
        )
        tell_carers(pc, "contingency-alert", carer_alert, carers)
    return alert


def acknowledge(session: Session, repo: Repository, policy: AccessPolicy, caller: Caller, communication_id: str, now: datetime) -> dict[str, Any]:
    """Record that a recipient organisation of an urgent alert has it in hand (``$ack``);
    returns a Parameters saying when and by whom it was first acknowledged."""
    stored = repo.current("Communication", communication_id)
    visible = stored is not None and not stored.deleted and policy.visible(session, caller, [stored]).resources[0] is not None
    alert = session.get(UrgentAlertRow, f"Communication/{communication_id}", with_for_update=True) if visible else None
    if stored is None or not visible or alert is None:
        raise FhirError(404, f"Communication/{communication_id} is not an urgent alert this organisation may see", "not-found")
    if not any(caller.organization in organization_keys(repo, r) for r in stored.resource.get("recipient", [])):
        raise FhirError(403, f"only the alert's recipient organisations acknowledge it; {caller.organization} is not one", "forbidden")
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now, caller.organization
        event = audit_event(
            "operation", Actor(caller.principal.client_id, caller.organization, None), detail=f"urgent alert {alert.focus} acknowledged",
            purpose="TREAT", entities=[alert.focus], patient=alert.patient,
        )
        append(session, event, patient=alert.patient, client_id=caller.principal.client_id)
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "communication", "valueReference": {"reference": alert.focus}},
            {"name": "acknowledged", "valueInstant": fhir_instant(alert.acknowledged_at)},
            {"name": "by", "valueString": alert.acknowledged_by},
            *([{"name": "escalated", "valueInstant": fhir_instant(alert.escalated_at)}] if alert.escalated_at else []),
        ],
    }
