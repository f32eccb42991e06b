"""Partners' own topic-based Subscriptions (R4 ``Subscription`` as the Subscriptions R5 Backport
IG shapes it), and what delivery outcomes do to a subscription's status.

A Subscription names one topic (``criteria`` = a ``https://pathway.scot/SubscriptionTopic/...``
canonical), optionally a filter (``_criteria`` extension ``backport-filter-criteria``, e.g.
``Task?patient=Patient/123``), a ``rest-hook`` endpoint, the payload content (``id-only`` or
``full-resource``) and a heartbeat period. It is stored as a ``subscription`` row, the same the
outbox queues for, so events reach it with the same signing, idempotency keys, leases and
dead letters as every push. Only the organisation it belongs to may see or change it.

Status: ``requested`` until its handshake is delivered, then ``active``; ``error`` while an
event has kept failing for ``delivery.error_after_hours``; ``off`` when its owner says so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import ValidationError
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

import consent
from gateway.auth.scopes import allows
from gateway.conf import Delivery, Webhook
from gateway.delivery.models import DeliveryRow, SubscriptionRow
from gateway.delivery.outbox import queue_notice
from gateway.delivery.topics import TOPIC_BASE, TOPICS, Topic, topic_of
from gateway.directory import current_agreements
from gateway.fhir.access import AccessPolicy, Caller
from gateway.fhir.outcomes import FhirError
from gateway.fhir.validation import validate_resource
from gateway.store.repository import Repository, fhir_instant

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SUBSCRIPTION_PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
CONTENTS = ("id-only", "full-resource")
MIN_HEARTBEAT_SECONDS = 10  # the sweep runs every 5 s; faster heartbeats would only be noise
# Each subscription is a handshake and a heartbeat every 10 s or more to a partner-chosen
# endpoint: without a cap a partner could make the gateway flood any host.
MAX_PER_ORGANISATION = 20
SUBSCRIPTION = SubscriptionRow.__table__
DELIVERY = DeliveryRow.__table__


@dataclass(frozen=True)
class Wanted:
    """What a partner's Subscription asks for, checked."""

    topic: Topic
    endpoint: str
    content: str
    patient: str | None
    heartbeat_seconds: int | None
    off: bool
    body: dict[str, Any]


def _extension(element: dict[str, Any] | None, url: str) -> dict[str, Any] | None:
    return next((e for e in (element or {}).get("extension", []) if e.get("url") == url), None)


def _refuse(message: str, expression: str, code: str = "value", status: int = 422) -> FhirError:
    return FhirError(status, message, code, expression)


def parse_subscription(body: Any) -> Wanted:
    """Check a partner's Subscription (structure as FHIR R4, content as this server supports)."""
    resource = validate_resource(body, "Subscription")
    topic = topic_of(resource["criteria"])
    if topic is None:
        topics = ", ".join(t.canonical for t in TOPICS.values())
        raise _refuse(f"criteria must be one of this server's topics ({topics}), not {resource['criteria']!r}", "Subscription.criteria")
    channel = resource["channel"]
    if channel["type"] != "rest-hook":
        raise _refuse(f"channel.type {channel['type']!r} is not supported; use rest-hook", "Subscription.channel.type", "not-supported")
    if channel.get("header"):
        raise _refuse(
            "channel.header is not supported: every notification is signed (X-Pathway-Signature, the keys at "
            "/.well-known/jwks.json) instead of carrying a secret",
            "Subscription.channel.header",
            "not-supported",
        )
    endpoint = channel.get("endpoint") or ""
    try:
        Webhook(url=endpoint)
    except ValidationError as error:
        problem = error.errors()[0]
        raise _refuse(f"channel.endpoint: {(problem.get('ctx') or {}).get('error') or problem['msg']}", "Subscription.channel.endpoint") from None
    if channel.get("payload") not in ("application/fhir+json", "application/json"):
        raise _refuse("channel.payload must be application/fhir+json (notifications are FHIR JSON Bundles)", "Subscription.channel.payload")
    content = (_extension(channel.get("_payload"), PAYLOAD_CONTENT) or {}).get("valueCode", "full-resource")
    if content not in CONTENTS:
        raise _refuse(f"payload content {content!r} is not supported; use id-only or full-resource", "Subscription.channel.payload", "not-supported")
    heartbeat = (_extension(channel, HEARTBEAT_PERIOD) or {}).get("valueUnsignedInt")
    if heartbeat is not None and heartbeat < MIN_HEARTBEAT_SECONDS:
        raise _refuse(f"heartbeat period must be at least {MIN_HEARTBEAT_SECONDS} s", "Subscription.channel.extension")
    patient = _patient_filter(topic, (_extension(resource.get("_criteria"), FILTER_CRITERIA) or {}).get("valueString"))
    return Wanted(topic, endpoint, content, patient, heartbeat, resource["status"] == "off", resource)


def _patient_filter(topic: Topic, criteria: str | None) -> str | None:
    """The ``Patient/{id}`` a filter such as ``Task?patient=Patient/123`` names, if any."""
    if not criteria:
        return None
    kind, _, query = criteria.partition("?")
    if kind and kind not in topic.focus_types:
        raise _refuse(f"filter {criteria!r}: topic {topic.event} is about {' or '.join(topic.focus_types)}, not {kind}", "Subscription.criteria")
    params = parse_qsl(query, keep_blank_values=True)
    allowed = set(topic.filters)
    unknown = sorted({name for name, _ in params} - allowed)
    if unknown or len(params) != 1:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise _refuse(f"filter {criteria!r}: topic {topic.event} allows one filter of: {allowed_text}", "Subscription.criteria", "not-supported")
    value = params[0][1]
    reference = value if value.startswith("Patient/") else f"Patient/{value}"
    if not reference.removeprefix("Patient/") or "/" in reference.removeprefix("Patient/") or len(reference) > 80:
        raise _refuse(f"filter {criteria!r}: patient must be Patient/{{id}}", "Subscription.criteria")
    return reference


def check_entitled(session: Session, repo: Repository, policy: AccessPolicy, caller: Caller, wanted: Wanted, today: str) -> None:
    """403 unless the caller's scopes allow reading the topic's resources, its organisation is a
    party to a current agreement, and it may see the person its filter names."""
    if caller.acting_for is not None:
        raise FhirError(403, "a portal acting for a person cannot subscribe; the portal organisation's system client can", "forbidden")
    for kind in wanted.topic.focus_types:
        if not allows(caller.principal.scopes, kind, "r"):
            raise FhirError(403, f"topic {wanted.topic.event} sends {kind} resources: the token scopes do not allow reading {kind}", "forbidden")
    if not _in_current_agreement(session, caller.organization, today):
        raise FhirError(403, f"{caller.organization} is not a party to a current information-sharing agreement, so it may not subscribe", "forbidden")
    if wanted.patient is not None:
        stored = repo.current("Patient", wanted.patient.split("/", 1)[1])
        visible = stored is not None and not stored.deleted and policy.visible(session, caller, [stored]).resources[0] is not None
        if not visible:
            raise FhirError(
                403, f"the filter names {wanted.patient}, a person this organisation may not see: a subscription may only follow people it may see", "forbidden"
            )


def _in_current_agreement(session: Session, organization: str, today: str) -> bool:
    """Whether an agreement naming ``organization`` is in force ``today``, by the consent
    engine's own party, status, date and lapse rules."""
    system, _, value = organization.partition("|")
    return bool(consent.agreements_in_force(current_agreements(session), None, [{"system": system, "value": value}], today))


# --- storing -----------------------------------------------------------------------------------


def owned(session: Session, caller: Caller, subscription_id: str, *, lock: bool = False) -> SubscriptionRow:
    """The caller organisation's subscription with this id; 404 for any other (whose existence
    is not the caller's business)."""
    query = select(SubscriptionRow).where(SubscriptionRow.id == subscription_id, SubscriptionRow.recipient == caller.organization)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        raise FhirError(404, f"Subscription/{subscription_id} is not known", "not-found")
    return row


def _no_duplicate(session: Session, recipient: str, event: str, endpoint: str, own_id: str | None) -> None:
    clash = session.scalars(
        select(SubscriptionRow).where(SubscriptionRow.recipient == recipient, SubscriptionRow.event == event, SubscriptionRow.endpoint == endpoint)
    ).first()
    if clash is not None and clash.id != own_id:
        raise FhirError(409, f"Subscription/{clash.id} already sends topic {event} to {endpoint}; update or delete it instead", "duplicate")


def create(session: Session, caller: Caller, wanted: Wanted, now: datetime) -> SubscriptionRow:
    """Store a new Subscription (status requested) and queue its handshake."""
    _no_duplicate(session, caller.organization, wanted.topic.event, wanted.endpoint, None)
    held = session.scalar(
        select(func.count()).select_from(SubscriptionRow).where(SubscriptionRow.recipient == caller.organization, SubscriptionRow.owner_client.is_not(None))
    )
    if (held or 0) >= MAX_PER_ORGANISATION:
        raise _refuse(f"an organisation may hold at most {MAX_PER_ORGANISATION} Subscriptions; update or delete one of yours first", "Subscription", "too-costly")
    row = SubscriptionRow(
        id=str(uuid.uuid4()),
        recipient=caller.organization,
        event=wanted.topic.event,
        endpoint=wanted.endpoint,
        active=False,
        created=now,
        events_queued=0,
        status="off" if wanted.off else "requested",
        owner_client=caller.principal.client_id,
        version=1,
        updated=now,
    )
    _apply(row, wanted)
    session.add(row)
    session.flush()
    if not wanted.off:
        queue_notice(session, row, "handshake", now)
    return row


def change(session: Session, caller: Caller, row: SubscriptionRow, wanted: Wanted, now: datetime) -> SubscriptionRow:
    """Update the caller's Subscription; a new endpoint or a turn back on asks for a new handshake."""
    if row.owner_client is None:
        raise FhirError(403, f"Subscription/{row.id} comes from conf/partners.yaml; the partnership's operator changes it", "forbidden")
    if wanted.topic.event != row.event:
        raise _refuse(f"a Subscription's topic cannot change (it is {TOPIC_BASE}{row.event}); create another", "Subscription.criteria")
    _no_duplicate(session, row.recipient, row.event, wanted.endpoint, row.id)
    again = not wanted.off and (row.status == "off" or wanted.endpoint != row.endpoint)
    row.endpoint = wanted.endpoint
    _apply(row, wanted)
    if wanted.off:
        row.active, row.status = False, "off"
    elif again:
        row.active, row.status, row.error_since, row.last_error = False, "requested", None, None
    row.version += 1
    row.updated = now
    session.flush()
    if again:
        queue_notice(session, row, "handshake", now)
    return row


def remove(session: Session, row: SubscriptionRow) -> None:
    """Delete the caller's Subscription; events still queued for it are dropped (those sent
    stay in the outbox's record)."""
    if row.owner_client is None:
        raise FhirError(403, f"Subscription/{row.id} comes from conf/partners.yaml; the partnership's operator removes it", "forbidden")
    session.delete(row)
    session.execute(
        update(DELIVERY)
        .where(DELIVERY.c.subscription_id == row.id, DELIVERY.c.status == "pending")
        .values(status="dropped", last_error="the Subscription was deleted")
    )


def _apply(row: SubscriptionRow, wanted: Wanted) -> None:
    row.content, row.patient_filter, row.heartbeat_seconds = wanted.content, wanted.patient, wanted.heartbeat_seconds
    kept = {k: v for k, v in wanted.body.items() if k not in ("id", "meta", "status", "error")}
    row.body = orjson.dumps(kept).decode()


def as_resource(row: SubscriptionRow) -> dict[str, Any]:
    """The stored subscription as an R4 Subscription (Backport profile)."""
    if row.body:
        resource: dict[str, Any] = orjson.loads(row.body)
    else:  # from conf/partners.yaml
        resource = {
            "reason": "configured in conf/partners.yaml",
            "criteria": TOPIC_BASE + row.event,
            "channel": {
                "type": "rest-hook",
                "endpoint": row.endpoint,
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": row.content}]},
            },
        }
    resource = {
        "resourceType": "Subscription",
        "id": row.id,
        "meta": {"versionId": str(row.version), "lastUpdated": fhir_instant(row.updated or row.created), "profile": [SUBSCRIPTION_PROFILE]},
        **resource,
        "status": row.status,
    }
    if row.status == "error" and row.last_error:
        resource["error"] = row.last_error
    return resource


# --- what deliveries do to their subscriptions ----------------------------------------------------


class SubscriptionOutcomes:
    """Collects one batch of delivery outcomes per subscription and records what they mean for
    it: a delivered handshake activates it, a delivery clears its error, an event failing for
    longer than ``error_after_hours`` puts it in ``error``, and so does at once a delivery that
    can never be sent as things stand (its endpoint resolves to an internal address)."""

    def __init__(self, now: datetime, settings: Delivery) -> None:
        self.now, self.settings = now, settings
        self._delivered: dict[str, bool] = {}  # subscription id -> a handshake was among them
        self._failing: dict[str, tuple[datetime, str]] = {}  # subscription id -> oldest failing event, last error
        self._at_once: set[str] = set()

    def add(self, subscription_id: str, event: str, status: str, created: datetime, detail: str | None, *, at_once: bool = False) -> None:
        if status == "delivered":
            self._delivered[subscription_id] = self._delivered.get(subscription_id, False) or event == "handshake"
        elif status in ("pending", "dead"):
            since = min(created, self._failing.get(subscription_id, (created, ""))[0])
            self._failing[subscription_id] = (since, detail or "failed")
            if at_once:
                self._at_once.add(subscription_id)

    def record(self, session: Session) -> None:
        """Apply them inside the worker's recording transaction. A healthy subscription without
        heartbeats is not written at all, so sending does not contend with the events numbering it."""
        for sub_id, handshake in self._delivered.items():
            if handshake:
                session.execute(
                    update(SUBSCRIPTION).where(SUBSCRIPTION.c.id == sub_id, SUBSCRIPTION.c.status == "requested").values(status="active", active=True)
                )
            session.execute(
                update(SUBSCRIPTION)
                .where(
                    SUBSCRIPTION.c.id == sub_id,
                    or_(SUBSCRIPTION.c.status == "error", SUBSCRIPTION.c.error_since.is_not(None), SUBSCRIPTION.c.heartbeat_seconds.is_not(None)),
                )
                .values(
                    status=case((SUBSCRIPTION.c.status == "error", "active"), else_=SUBSCRIPTION.c.status),
                    last_sent_at=self.now,
                    error_since=None,
                    last_error=None,
                )
            )
        failing = {k: v for k, v in self._failing.items() if k not in self._delivered}
        if not failing:
            return
        limit = timedelta(hours=self.settings.error_after_hours)
        rows = session.execute(select(SUBSCRIPTION.c.id, SUBSCRIPTION.c.status, SUBSCRIPTION.c.error_since).where(SUBSCRIPTION.c.id.in_(failing)))
        for sub_id, status, error_since in rows:
            since, detail = failing[sub_id]
            since = min(since, error_since) if error_since else since
            # Written only when something changes: the first failure, and the move to error.
            if error_since is None:
                session.execute(update(SUBSCRIPTION).where(SUBSCRIPTION.c.id == sub_id).values(error_since=since, last_error=detail))
            if (status == "active" and self.now - since >= limit) or (status != "off" and sub_id in self._at_once):
                session.execute(update(SUBSCRIPTION).where(SUBSCRIPTION.c.id == sub_id).values(status="error", last_error=detail))


def due_heartbeats(session: Session, now: datetime) -> int:
    """Queue a heartbeat for each subscription with a heartbeat period that has heard nothing
    for that long; returns how many."""
    rows = session.scalars(
        select(SubscriptionRow)
        .where(SubscriptionRow.active.is_(True), SubscriptionRow.heartbeat_seconds.is_not(None))
        .with_for_update(skip_locked=True)  # several sender processes sweep: one heartbeat each
    ).all()
    queued = 0
    for row in rows:
        last = row.last_sent_at or row.created
        if now - last >= timedelta(seconds=row.heartbeat_seconds or 0):
            queue_notice(session, row, "heartbeat", now)
            row.last_sent_at = now
            queued += 1
    return queued
