"""Telling partners about pathway events: the one place the workflow meets delivery.

Each call writes outbox rows in the caller's transaction (DESIGN §9), so an event and
its deliveries are stored together or not at all. Recipients without a subscription
pull instead (their Tasks and Communications are searchable, DESIGN §7 "Deliveries").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from gateway.delivery.outbox import enqueue


def notify(
    session: Session,
    event: str,
    recipients: Iterable[str],
    *,
    focus: str,
    patient: str | None,
    purpose: str = "CAREMGT",
    acting_for: str | None = None,
    include: Sequence[str] = (),
) -> list[str]:
    """Queue ``event`` about ``focus`` for each distinct recipient organisation ("system|value");
    returns the recipients it was queued for."""
    queued = list(dict.fromkeys(r for r in recipients if r))
    for recipient in queued:
        enqueue(session, event=event, recipient=recipient, focus=focus, patient=patient, purpose=purpose, acting_for=acting_for, include=tuple(include))
    return queued
