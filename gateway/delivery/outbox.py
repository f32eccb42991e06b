"""The outbox: deliveries written in the same transaction as the change they announce.

A workflow step calls :func:`enqueue` inside its own transaction, so the state
change and its notifications commit together or not at all; the worker sends
them later. Recipients without a subscription get no row: they pull instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from gateway.delivery.models import CONTROL_EVENTS, EVENTS, DeliveryRow, SubscriptionRow
from gateway.store.hot import Hot
from gateway.store.repository import now_utc

DELIVERY = DeliveryRow.__table__
SUBSCRIPTION = SubscriptionRow.__table__
# Deterministic subscription ids, so loading the same configuration twice changes nothing.
_SUBSCRIPTION_NAMESPACE = uuid.UUID("5b0f3c1e-9d2a-4c47-8f0e-2a6d1c9e7b31")
# Built once: an event numbered for each of the recipient's active subscriptions to it.
_COUNT_EVENT = (
    update(SUBSCRIPTION)
    .where(
        SUBSCRIPTION.c.recipient == bindparam("b_recipient"),
        SUBSCRIPTION.c.event == bindparam("b_event"),
        SUBSCRIPTION.c.active.is_(True),
        or_(SUBSCRIPTION.c.patient_filter.is_(None), SUBSCRIPTION.c.patient_filter == bindparam("b_patient")),
    )
    .values(events_queued=SUBSCRIPTION.c.events_queued + 1)
    .returning(SUBSCRIPTION.c.id, SUBSCRIPTION.c.endpoint, SUBSCRIPTION.c.events_queued)
)
_INSERT_DELIVERIES = Hot(insert(DELIVERY))
# A withdrawal notice must still reach recipients after the consent it reports is gone.
_KEPT_ON_WITHDRAWAL = ("withdrawal-notice",)


class DeliveryConfigError(ValueError):
    """A subscription in the configuration cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Queued:
    """One delivery written to the outbox."""

    id: str
    recipient: str
    endpoint: str
    event: str


def subscription_id(recipient: str, event: str, endpoint: str) -> str:
    return str(uuid.uuid5(_SUBSCRIPTION_NAMESPACE, f"{recipient}\n{event}\n{endpoint}"))


def _check_reference(ref: str, what: str) -> None:
    kind, _, ident = ref.partition("/")
    if not kind or not ident or "/" in ident:
        raise ValueError(f"{what} must be a reference 'Type/id', not {ref!r}")


def enqueue(
    session: Session,
    *,
    event: str,
    recipient: str,
    focus: str,
    patient: str | None,
    purpose: str,
    acting_for: str | None = None,
    include: Sequence[str] = (),
) -> list[Queued]:
    """Queue ``event`` about ``focus`` for every active subscription ``recipient`` holds,
    inside the caller's transaction. ``include`` names further resources ("Type/id") to
    send with the focus if the recipient may see them."""
    if event not in EVENTS:
        raise ValueError(f"unknown delivery event {event!r}; expected one of {sorted(EVENTS)}")
    _check_reference(focus, "focus")
    for ref in include:
        _check_reference(ref, "include")
    # Advancing each subscription's counter numbers its events and, on PostgreSQL,
    # locks the subscription row so concurrent events get distinct numbers.
    connection = session.connection()
    counted = connection.execute(_COUNT_EVENT, {"b_recipient": recipient, "b_event": event, "b_patient": patient}).all()
    if not counted:
        return []
    moment = now_utc()
    extra = orjson.dumps(list(include)).decode()
    rows = [
        _row(sub_id, number, event, recipient, endpoint, focus, patient, purpose, acting_for, extra, moment)
        for sub_id, endpoint, number in sorted(counted)
    ]
    _INSERT_DELIVERIES.execute(connection, rows)
    return [Queued(r["id"], recipient, r["endpoint"], event) for r in rows]


def _row(
    sub_id: str, number: int, event: str, recipient: str, endpoint: str, focus: str, patient: str | None,
    purpose: str, acting_for: str | None, extra: str, moment: datetime,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "subscription_id": sub_id,
        "event_number": number,
        "event": event,
        "recipient": recipient,
        "endpoint": endpoint,
        "focus": focus,
        "patient": patient,
        "purpose": purpose,
        "acting_for": acting_for,
        "extra_refs": extra,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": moment,
        "created": moment,
    }


def queue_notice(session: Session, subscription: SubscriptionRow, kind: str, moment: datetime | None = None) -> str:
    """Queue a ``handshake`` or ``heartbeat`` for ``subscription`` (no resources; the
    subscription's own status); returns the delivery id."""
    if kind not in CONTROL_EVENTS:
        raise ValueError(f"unknown notice {kind!r}; expected one of {sorted(CONTROL_EVENTS)}")
    row = _row(
        subscription.id, subscription.events_queued, kind, subscription.recipient, subscription.endpoint,
        f"Subscription/{subscription.id}", None, "HOPERAT", None, "[]", moment or now_utc(),
    )
    _INSERT_DELIVERIES.execute(session.connection(), [row])
    return str(row["id"])


def sync_subscriptions(session: Session, subscriptions: Iterable[tuple[str, str, Sequence[str]]]) -> dict[str, int]:
    """Make the active subscriptions exactly those configured: (recipient "system|value",
    endpoint URL, [events]). Others are deactivated, never deleted, so their
    deliveries keep a subscription to point at. Returns counts of what changed."""
    wanted: dict[str, tuple[str, str, str]] = {}
    for recipient, endpoint, events in subscriptions:
        system, sep, value = recipient.partition("|")
        if not sep or not system or not value:
            raise DeliveryConfigError(f"subscription recipient {recipient!r} must be 'system|value'")
        if not endpoint.startswith(("https://", "http://")):
            raise DeliveryConfigError(f"subscription endpoint {endpoint!r} for {recipient} must be an http(s) URL")
        for event in events:
            if event not in EVENTS:
                raise DeliveryConfigError(
                    f"subscription of {recipient} names unknown event {event!r}; expected one of {sorted(EVENTS)}"
                )
            wanted[subscription_id(recipient, event, endpoint)] = (recipient, event, endpoint)
    # Partners' own Subscriptions (owner_client set) are theirs to change, not conf/'s.
    existing = {row.id: row for row in session.scalars(select(SubscriptionRow).where(SubscriptionRow.owner_client.is_(None)))}
    changed = {"added": 0, "reactivated": 0, "deactivated": 0}
    own = {(r.recipient, r.event, r.endpoint): r.id for r in session.scalars(select(SubscriptionRow).where(SubscriptionRow.owner_client.is_not(None)))}
    for sub_id, (recipient, event, endpoint) in wanted.items():
        row = existing.get(sub_id)
        if (recipient, event, endpoint) in own:
            raise DeliveryConfigError(
                f"{recipient} already has its own Subscription/{own[recipient, event, endpoint]} to {event} at {endpoint}; "
                "remove the webhook from partners.yaml or ask the partner to delete theirs"
            )
        if row is None:
            session.add(
                SubscriptionRow(
                    id=sub_id, recipient=recipient, event=event, endpoint=endpoint, active=True, created=now_utc(), events_queued=0
                )
            )
            changed["added"] += 1
        elif not row.active:
            row.active, row.status = True, "active"
            changed["reactivated"] += 1
    for sub_id, row in existing.items():
        if sub_id not in wanted and row.active:
            row.active, row.status = False, "off"
            changed["deactivated"] += 1
    session.flush()
    return changed


def drop_pending(session: Session, *, patient: str, recipient: str | None = None, reason: str = "consent withdrawn") -> int:
    """Drop the deliveries about ``patient`` (to ``recipient``, or to anyone) still waiting
    to be sent; returns how many. Withdrawal notices themselves are kept."""
    query = update(DELIVERY).where(
        DELIVERY.c.patient == patient,
        DELIVERY.c.status == "pending",
        DELIVERY.c.event.not_in(_KEPT_ON_WITHDRAWAL),
    )
    if recipient is not None:
        query = query.where(DELIVERY.c.recipient == recipient)
    return session.execute(query.values(status="dropped", last_error=reason, claimed_by=None, claimed_until=None)).rowcount


class ReplayRefused(ValueError):
    """A delivery cannot be replayed; the message says why."""


_REPLAYABLE = ("dead", "dropped", "delivered")


def replay(session: Session, delivery_id: str) -> None:
    """Queue one finished delivery again (same idempotency key, attempts reset).

    Consent is re-checked when it is sent, as for every delivery."""
    row = session.get(DeliveryRow, delivery_id, with_for_update=True)
    if row is None:
        raise ReplayRefused(f"no delivery {delivery_id}; `pathway deliveries list` shows them")
    if row.status not in _REPLAYABLE:
        raise ReplayRefused(f"delivery {delivery_id} is {row.status}, already queued; nothing to replay")
    _requeue(session, DELIVERY.c.id == delivery_id)


def replay_dead(
    session: Session,
    *,
    recipient: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Queue the dead-lettered deliveries again, all or those matching the filters (recipient,
    event type, created in [since, until)); returns how many."""
    return _requeue(session, and_(DELIVERY.c.status == "dead", *_filters(recipient, event, since, until)))


def _filters(recipient: str | None, event: str | None, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    wanted: list[ColumnElement[bool]] = []
    if recipient:
        wanted.append(DELIVERY.c.recipient == recipient)
    if event:
        wanted.append(DELIVERY.c.event == event)
    if since is not None:
        wanted.append(DELIVERY.c.created >= since)
    if until is not None:
        wanted.append(DELIVERY.c.created < until)
    return wanted


def count_dead(
    session: Session, *, recipient: str | None = None, event: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> int:
    """How many dead letters match the filters (what :func:`replay_dead` would queue)."""
    query = select(func.count()).select_from(DELIVERY).where(DELIVERY.c.status == "dead", *_filters(recipient, event, since, until))
    return session.scalar(query) or 0


def _requeue(session: Session, which: ColumnElement[bool]) -> int:
    values = {"status": "pending", "attempts": 0, "next_attempt_at": now_utc(), "last_error": None, "claimed_by": None, "claimed_until": None}
    return session.execute(update(DELIVERY).where(which).values(**values)).rowcount


def listing(session: Session, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest deliveries (optionally in one status) as plain dicts, for operators."""
    query = select(DeliveryRow).order_by(DeliveryRow.created.desc()).limit(limit)
    if status is not None:
        query = query.where(DeliveryRow.status == status)
    return [
        {
            "id": row.id,
            "event": row.event,
            "recipient": row.recipient,
            "endpoint": row.endpoint,
            "focus": row.focus,
            "status": row.status,
            "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at.isoformat(),
            "created": row.created.isoformat(),
            "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            "last_error": row.last_error,
        }
        for row in session.scalars(query)
    ]
