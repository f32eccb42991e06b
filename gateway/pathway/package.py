"""The referral package: what a Task's owner (the facility) may see about the person,
passed through the access policy so agreements and consent decide what is in it."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.audit.ledger import insert_disclosures
from gateway.fhir.access import AccessPolicy, Caller
from gateway.fhir.outcomes import FhirError, operation_outcome, withheld_warning
from gateway.pathway.records import organization_keys
from gateway.store.repository import Repository, Stored, fhir_instant, now_utc

# The person's resources a facility needs to take the referral (DESIGN §7 step 4).
PACKAGE_TYPES = (
    "Patient",
    "MedicationStatement",
    "MedicationRequest",
    "AllergyIntolerance",
    "Condition",
    "Flag",
    "CarePlan",
    "EpisodeOfCare",
    "ServiceRequest",
)


def _gather(repo: Repository, patient: str) -> list[Stored]:
    record = repo.current("Patient", patient.split("/", 1)[1])
    collected: list[Stored] = [record] if record is not None and not record.deleted else []
    for resource_type in PACKAGE_TYPES[1:]:
        collected.extend(stored for _, stored in repo.search(resource_type, patient=patient))
    return collected


def referral_package(session: Session, repo: Repository, policy: AccessPolicy, caller: Caller, task_id: str) -> dict[str, Any]:
    """A collection Bundle of what the Task's owner may see about the Task's person; audited."""
    task = repo.current("Task", task_id)
    if task is None or task.deleted or policy.visible(session, caller, [task]).resources[0] is None:
        raise FhirError(404, f"Task/{task_id} is not known", "not-found")
    resource = task.resource
    if caller.organization not in organization_keys(repo, resource.get("owner")):
        raise FhirError(403, "only the organisation that owns the Task may read its referral package", "forbidden")
    patient = str((resource.get("for") or {}).get("reference", ""))
    if not patient.startswith("Patient/"):
        raise FhirError(409, f"Task/{task_id} does not name the person it is for (Task.for)", "business-rule")
    gathered = _gather(repo, patient)
    visible = policy.visible(session, caller, gathered)
    shown = [(stored, seen) for stored, seen in zip(gathered, visible.resources) if seen is not None]
    entries: list[dict[str, Any]] = [{"fullUrl": stored.reference, "resource": seen} for stored, seen in shown]
    if visible.withheld or len(shown) < len(gathered):
        entries.append({"resource": operation_outcome([withheld_warning()])})
    event = audit_event(
        "operation",
        Actor(caller.principal.client_id, caller.organization, caller.acting_for),
        detail=f"referral package for Task/{task_id}",
        purpose=caller.purpose,
        entities=[f"Task/{task_id}", *(f"{s.reference}/_history/{s.version_id}" for s, _ in shown)],
        patient=patient,
    )
    append(session, event, patient=patient, client_id=caller.principal.client_id)
    insert_disclosures(session, visible.disclosures)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": fhir_instant(now_utc()),
        "entry": entries,
    }
