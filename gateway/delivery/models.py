"""Tables for push delivery: who subscribes to which pathway events, and the outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.models import Base, UTCDateTime

# The pathway events a recipient organisation may subscribe to.
EVENTS = frozenset(
    {
        "referral",
        "facility-referral",
        "task-status",
        "review",
        "review-summary",
        "contingency-alert",
        "withdrawal-notice",
        "agreement-notice",  # an agreement lapsed: to every party
        "break-glass-alert",  # an email-shaped alert to the IG officers' relay
    }
)
# Notices about a subscription itself (Subscriptions Backport notification types), not events.
CONTROL_EVENTS = frozenset({"handshake", "heartbeat"})
# Delivery states: pending -> sending -> delivered | pending (retry) | dead | dropped.
STATUSES = ("pending", "sending", "delivered", "dead", "dropped")
# Subscription states (R4 Subscription.status): requested until its handshake is delivered,
# error while an event keeps failing, off when its owner turns it off.
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off")


class SubscriptionRow(Base):
    """A recipient organisation's endpoint for one event type (topic): from ``conf/`` or a
    partner's own R4 ``Subscription`` (``owner_client`` set). Events are queued while ``active``."""

    __tablename__ = "subscription"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(200))  # "system|value"
    event: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    # Events queued so far: numbers each notification, as the Subscriptions Backport does.
    events_queued: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="active", server_default="active")
    content: Mapped[str] = mapped_column(String(16), default="full-resource", server_default="full-resource")
    patient_filter: Mapped[str | None] = mapped_column(String(80))  # "Patient/id"
    heartbeat_seconds: Mapped[int | None] = mapped_column(Integer)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    owner_client: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)  # the partner's Subscription as stored (JSON)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    updated: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        UniqueConstraint("recipient", "event", "endpoint", name="uq_subscription_target"),
        Index("ix_subscription_recipient_event", "recipient", "event"),
    )


class DeliveryRow(Base):
    """One notification to one endpoint; its id is the receiver's idempotency key."""

    __tablename__ = "delivery"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(36))
    event_number: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(500))
    focus: Mapped[str] = mapped_column(String(120))  # "Type/id"
    patient: Mapped[str | None] = mapped_column(String(80))
    purpose: Mapped[str] = mapped_column(String(40))
    acting_for: Mapped[str | None] = mapped_column(String(100))
    extra_refs: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of "Type/id"
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        Index("ix_delivery_due", "status", "next_attempt_at"),
        Index("ix_delivery_patient", "patient", "status"),
    )


class UrgentAlertRow(Base):
    """A contingency alert that must be delivered and acknowledged in minutes, else escalated."""

    __tablename__ = "urgent_alert"
    focus: Mapped[str] = mapped_column(String(120), primary_key=True)  # "Communication/id"
    patient: Mapped[str | None] = mapped_column(String(80))
    raised: Mapped[datetime] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalation_reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index("ix_urgent_alert_open", "escalated_at", "acknowledged_at"),)
