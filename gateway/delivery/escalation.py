"""Escalation of urgent alerts that are late: a contingency (early-exit) alert not delivered
within ``early_exit_alert.delivered_within_minutes``, or not acknowledged (``$ack``) within
``acknowledged_within_minutes``, is escalated once: the console shows it to the rehab team
(banner and dashboard), the alert is queued for the ``fallback`` organisations in
``pathway.yaml``, and an AuditEvent records why. The clocks start with the ``urgent_alert``
row ``gateway.pathway.alerts`` writes in the transaction that raises the alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import append, audit_event
from gateway.delivery.models import DeliveryRow, UrgentAlertRow
from gateway.delivery.outbox import enqueue
from gateway.pathway.records import directory_key
from gateway.pathway_settings import pathway_settings
from gateway.runtime import Gateway

URGENT_EVENT = "contingency-alert"
# Delivery states that mean "not (yet) received": a dropped one was stopped by the policy.
_UNDELIVERED = ("pending", "sending", "dead")


def escalate_late_alerts(gateway: Gateway, now: datetime) -> list[str]:
    """Escalate every urgent alert that is late at ``now``; returns their focus references."""
    with gateway.transaction() as session:
        try:
            settings = pathway_settings(session).early_exit_alert
        except (LookupError, ValueError):
            return []
        deliver_by = now - timedelta(minutes=settings.delivered_within_minutes)
        ack_by = now - timedelta(minutes=settings.acknowledged_within_minutes)
        open_alerts = session.scalars(
            select(UrgentAlertRow)
            .where(UrgentAlertRow.escalated_at.is_(None), UrgentAlertRow.acknowledged_at.is_(None), UrgentAlertRow.raised <= max(deliver_by, ack_by))
            .with_for_update(skip_locked=True)
        ).all()
        escalated = []
        for alert in open_alerts:
            reason = _why_late(session, alert, deliver_by, ack_by, settings.delivered_within_minutes, settings.acknowledged_within_minutes)
            if reason is None:
                continue
            repo = gateway.repository(session)
            fallback = [key for org_id in settings.fallback if (key := directory_key(repo, org_id))]
            for recipient in fallback:
                enqueue(session, event=URGENT_EVENT, recipient=recipient, focus=alert.focus, patient=alert.patient, purpose="TREAT")
            alert.escalated_at, alert.escalation_reason = now, reason
            told = ", ".join(fallback) or "no fallback recipients configured (pathway.yaml early_exit_alert.fallback)"
            event = audit_event(
                "operation", None, outcome="serious-failure", detail=f"urgent alert {alert.focus} escalated: {reason}; sent to {told}",
                purpose="TREAT", entities=[alert.focus], patient=alert.patient,
            )
            append(session, event, patient=alert.patient)
            escalated.append(alert.focus)
        return escalated


def _why_late(session: Session, alert: UrgentAlertRow, deliver_by: datetime, ack_by: datetime, deliver_minutes: float, ack_minutes: float) -> str | None:
    if alert.raised <= deliver_by:
        waiting = session.execute(
            select(DeliveryRow.recipient, DeliveryRow.last_error).where(
                DeliveryRow.focus == alert.focus, DeliveryRow.event == URGENT_EVENT, DeliveryRow.status.in_(_UNDELIVERED)
            )
        ).all()
        if waiting:
            errors = "; ".join(f"{recipient}: {error or 'not sent yet'}" for recipient, error in waiting)
            return f"not delivered within {deliver_minutes:g} minutes ({errors})"
    if alert.raised <= ack_by:
        return f"not acknowledged within {ack_minutes:g} minutes"
    return None


def open_escalations(session: Session, limit: int = 20) -> list[UrgentAlertRow]:
    """Escalated urgent alerts no one has acknowledged yet, newest first (for the console)."""
    return list(
        session.scalars(
            select(UrgentAlertRow)
            .where(UrgentAlertRow.escalated_at.is_not(None), UrgentAlertRow.acknowledged_at.is_(None))
            .order_by(UrgentAlertRow.escalated_at.desc())
            .limit(limit)
        )
    )
