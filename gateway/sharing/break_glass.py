"""Break-glass: time-boxed emergency access under a statutory basis, always reviewed.

A named user of a client whose role allows it (``break-glass``) may override
consent for one person with purpose ETREAT and a written reason, for at most
72 hours, under Adult Support and Protection, child protection or vital
interests. The override is audited with DICOM "Emergency Override Started"
and queued for an information-governance officer to review.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import DICOM, Actor, append, audit_event
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError
from gateway.store.crypto import keyring_of, open_text, seal_text
from gateway.store.models import BreakGlassRow
from gateway.store.repository import now_utc

MAX_HOURS = 72
BASES = ("adult-support-protection", "child-protection", "vital-interests")
OVERRIDE_STARTED = {"system": DICOM, "code": "110127", "display": "Emergency Override Started"}
REVIEW_OUTCOMES = ("justified", "not-justified", "referred")


def start(session: Session, caller: Caller, *, patient: str, user: str, reason: str, basis: str, hours: float) -> BreakGlassRow:
    """Open an override for ``patient``; refuses anything the rules do not allow."""
    if "break-glass" not in caller.principal.roles:
        raise FhirError(403, "this client's role does not allow break-glass access", "forbidden")
    if caller.purpose != "ETREAT":
        raise FhirError(422, "break-glass needs purpose ETREAT", "business-rule")
    if basis not in BASES:
        raise FhirError(422, f"basis must be one of {', '.join(BASES)}", "value", "basis")
    if not reason.strip() or len(reason.strip()) < 10:
        raise FhirError(422, "a written reason of at least 10 characters is required", "required", "reason")
    if not user.strip():
        raise FhirError(422, "the named user breaking the glass is required", "required", "user")
    if not 0 < hours <= MAX_HOURS:
        raise FhirError(422, f"duration must be more than 0 and at most {MAX_HOURS} hours", "value", "hours")
    if not patient.startswith("Patient/"):
        raise FhirError(422, "patient must be a Patient reference", "value", "patient")
    started = now_utc()
    grant_id = str(uuid.uuid4())
    grant = BreakGlassRow(
        id=grant_id,
        client_id=caller.principal.client_id,
        organization=caller.organization,
        user=user.strip(),
        patient=patient,
        basis=basis,
        reason=seal_text(keyring_of(session), reason.strip(), f"break-glass/{grant_id}/reason"),
        started=started,
        ends=started + timedelta(hours=hours),
    )
    session.add(grant)
    event = audit_event(
        "operation",
        Actor(caller.principal.client_id, caller.organization, user=grant.user),
        purpose="ETREAT",
        patient=patient,
        subtype=OVERRIDE_STARTED,
        detail=f"break-glass {grant.id} under {basis} until {grant.ends.isoformat()}: {reason.strip()}",
    )
    append(session, event, patient=patient, client_id=caller.principal.client_id)
    return grant


def active_grant(session: Session, client_id: str, patient: str) -> BreakGlassRow | None:
    """The override in force now for this client and person, if any."""
    now = now_utc()
    return session.scalars(
        select(BreakGlassRow).where(
            BreakGlassRow.client_id == client_id,
            BreakGlassRow.patient == patient,
            BreakGlassRow.started <= now,
            BreakGlassRow.ends > now,
        )
    ).first()


def review(session: Session, grant_id: str, *, reviewer: str, outcome: str, note: str) -> BreakGlassRow:
    """Record an IG officer's review of an override."""
    grant = session.get(BreakGlassRow, grant_id)
    if grant is None:
        raise FhirError(404, f"no break-glass entry {grant_id}", "not-found")
    if outcome not in REVIEW_OUTCOMES:
        raise FhirError(422, f"outcome must be one of {', '.join(REVIEW_OUTCOMES)}", "value", "outcome")
    sealed_note = seal_text(keyring_of(session), note, f"break-glass/{grant.id}/review-note")
    grant.review_status, grant.reviewer, grant.review_note, grant.reviewed_at = outcome, reviewer, sealed_note, now_utc()
    event = audit_event("operation", None, patient=grant.patient, detail=f"break-glass {grant.id} reviewed by {reviewer}: {outcome}")
    append(session, event, patient=grant.patient)
    return grant


def written(session: Session, grant: BreakGlassRow) -> tuple[str, str | None]:
    """The override's reason and its review note as written (both are sealed at rest)."""
    keyring = keyring_of(session)
    return (
        open_text(keyring, grant.reason, f"break-glass/{grant.id}/reason") or "",
        open_text(keyring, grant.review_note, f"break-glass/{grant.id}/review-note"),
    )


def pending_reviews(session: Session) -> list[BreakGlassRow]:
    return list(session.scalars(select(BreakGlassRow).where(BreakGlassRow.review_status == "pending").order_by(BreakGlassRow.started)))
