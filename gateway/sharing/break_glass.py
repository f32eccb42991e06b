"""Break-glass: time-boxed emergency access under a statutory basis, always reviewed.

A named user of a client whose role is named in ``conf/agreements.yaml``
(``governance.break_glass_roles``, by default ``break-glass``) may override
consent for one person with purpose ETREAT and a written reason, for at most
72 hours, under Adult Support and Protection, child protection or vital
interests. The override is audited with DICOM "Emergency Override Started",
queued for an information-governance officer to review, and alerted to the IG
officers at once (console banner, and an email-shaped delivery).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import DICOM, Actor, append, audit_event
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError
from gateway.console.directory_names import Directory
from gateway.sharing.notices import governance, notify
from gateway.store.crypto import keyring_of, open_text, seal_text
from gateway.store.models import BreakGlassRow
from gateway.store.repository import Repository, now_utc

MAX_HOURS = 72
BASES = ("adult-support-protection", "child-protection", "vital-interests")
OVERRIDE_STARTED = {"system": DICOM, "code": "110127", "display": "Emergency Override Started"}
REVIEW_OUTCOMES = ("justified", "not-justified", "referred")


def start(session: Session, caller: Caller, *, patient: str, user: str, reason: str, basis: str, hours: float) -> BreakGlassRow:
    """Open an override for ``patient``; refuses anything the rules do not allow."""
    allowed = governance(session).break_glass_roles
    if not set(allowed) & caller.principal.roles:
        raise FhirError(403, f"this client's role does not allow break-glass access (only {', '.join(allowed) or 'none'}, as conf/agreements.yaml names)", "forbidden")
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
    alert(session, grant)
    return grant


def alert(session: Session, grant: BreakGlassRow) -> None:
    """Tell the IG officers at once: an email-shaped Communication to the configured address,
    delivered through the alert organisation's ``break-glass-alert`` subscription. It names
    the override, not the person."""
    settings = governance(session).ig_alerts
    if settings is None:
        return
    recipient = Directory.load(Repository(session, keyring_of(session))).by_reference(f"Organization/{settings.organization}")
    if recipient is None:
        return
    notify(
        session,
        event="break-glass-alert",
        recipient=recipient.identifier,
        subject=f"Break-glass used by {grant.user} ({grant.organization})",
        text=f"Break-glass override {grant.id} was started at {grant.started.isoformat()} by {grant.user} of {grant.organization} "
        f"(client {grant.client_id}) under {grant.basis}, until {grant.ends.isoformat()}. Review it in the console: /console/break-glass",
        category="break-glass-alert",
        to=[{"identifier": {"system": "urn:ietf:rfc:3986", "value": f"mailto:{settings.email}"}, "display": settings.email}],
    )


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


def may_review(session: Session, grant: BreakGlassRow, organization: str) -> bool:
    """Whether an IG officer of ``organization`` may review ``grant``: one of the organisation whose
    user broke the glass, or of the partnership's IG alerts organisation (``governance.ig_alerts``)."""
    directory = Directory.load(Repository(session, keyring_of(session)))
    alerts = governance(session).ig_alerts
    mine = directory.by_identifier(organization)
    return grant.organization in directory.known_as(organization) or (alerts is not None and mine is not None and mine.reference == f"Organization/{alerts.organization}")


def review(session: Session, grant_id: str, *, reviewer: str, organization: str, outcome: str, note: str) -> BreakGlassRow:
    """Record the review of an override by an IG officer of ``organization`` (see :func:`may_review`)."""
    grant = session.get(BreakGlassRow, grant_id)
    if grant is None:
        raise FhirError(404, f"no break-glass entry {grant_id}", "not-found")
    if not may_review(session, grant, organization):
        raise FhirError(403, f"break-glass {grant.id} was used at {grant.organization}; it is reviewed by that organisation's IG officers or the partnership's IG alerts organisation, not by yours ({organization})", "forbidden")
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
