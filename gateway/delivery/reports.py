"""What operators see of push delivery: failing endpoints, subscriptions, and a partner's inbox
(what was sent to it and what became of each). No person data: events are named by type,
number and the focus reference."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from gateway.delivery.models import DeliveryRow, SubscriptionRow


@dataclass(frozen=True)
class FailingEndpoint:
    """An endpoint with deliveries waiting after a failure, or dead."""

    recipient: str
    endpoint: str
    waiting: int
    dead: int
    oldest: datetime
    last_error: str | None
    status: str | None  # the worst status of its subscriptions


def failing_endpoints(session: Session) -> list[FailingEndpoint]:
    """Endpoints with retried or dead deliveries, the longest-failing first."""
    failed = (DeliveryRow.status == "dead") | ((DeliveryRow.status.in_(("pending", "sending"))) & (DeliveryRow.attempts > 0))
    rows = session.execute(
        select(
            DeliveryRow.recipient,
            DeliveryRow.endpoint,
            func.sum(case((DeliveryRow.status != "dead", 1), else_=0)),
            func.sum(case((DeliveryRow.status == "dead", 1), else_=0)),
            func.min(DeliveryRow.created),
        )
        .where(failed)
        .group_by(DeliveryRow.recipient, DeliveryRow.endpoint)
        .order_by(func.min(DeliveryRow.created))
    ).all()
    found = []
    for recipient, endpoint, waiting, dead, oldest in rows:
        last_error = session.scalar(
            select(DeliveryRow.last_error)
            .where(DeliveryRow.endpoint == endpoint, DeliveryRow.recipient == recipient, DeliveryRow.last_error.is_not(None))
            .order_by(DeliveryRow.next_attempt_at.desc())
            .limit(1)
        )
        statuses = set(session.scalars(select(SubscriptionRow.status).where(SubscriptionRow.endpoint == endpoint)))
        status = next((s for s in ("error", "requested", "active", "off") if s in statuses), None)
        found.append(FailingEndpoint(recipient, endpoint, int(waiting or 0), int(dead or 0), oldest, last_error, status))
    return found


def subscriptions(session: Session) -> list[SubscriptionRow]:
    """Every subscription, by recipient and topic."""
    return list(session.scalars(select(SubscriptionRow).order_by(SubscriptionRow.recipient, SubscriptionRow.event)))


def recipients(session: Session) -> list[tuple[str, int, int]]:
    """(recipient, delivered, not delivered) for every organisation deliveries were queued for."""
    rows = session.execute(
        select(
            DeliveryRow.recipient,
            func.sum(case((DeliveryRow.status == "delivered", 1), else_=0)),
            func.sum(case((DeliveryRow.status != "delivered", 1), else_=0)),
        ).group_by(DeliveryRow.recipient).order_by(DeliveryRow.recipient)
    ).all()
    return [(r, int(d or 0), int(n or 0)) for r, d, n in rows]


def inbox(session: Session, recipient: str, limit: int = 200) -> list[DeliveryRow]:
    """What was queued for ``recipient``, newest first: delivered, waiting, dead or dropped."""
    return list(session.scalars(select(DeliveryRow).where(DeliveryRow.recipient == recipient).order_by(DeliveryRow.created.desc()).limit(limit)))
