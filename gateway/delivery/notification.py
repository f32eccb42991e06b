"""The notification Bundles a subscriber receives (and ``$status``/``$events`` answer with).

FHIR R4 has no ``SubscriptionStatus`` resource. The R4 Subscriptions Backport
(http://hl7.org/fhir/uv/subscriptions-backport) carries the same content in a
``Parameters`` resource, and so does Pathway: the first entry of a ``history``
Bundle is that Parameters resource with

- ``subscription``: the recipient's subscription (``Subscription/{id}``),
- ``topic``: ``https://pathway.scot/SubscriptionTopic/{event}``,
- ``status`` (the subscription's), ``type`` (``handshake``, ``heartbeat``,
  ``event-notification`` or ``query-event``),
- ``events-since-subscription-start``: events queued for it so far,
- one ``notification-event`` per event: parts ``event-number``, ``timestamp``, ``focus`` and
  one ``additional-context`` per further resource sent.

With ``full-resource`` content the resources the recipient may see follow, each as a history
entry; with ``id-only`` only their references are in the notification.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.delivery.topics import TOPIC_BASE
from gateway.store.repository import fhir_instant

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
__all__ = ["TOPIC_BASE", "STATUS_PROFILE", "Event", "notification_status", "notification_bundle"]


@dataclass(frozen=True)
class Event:
    """One numbered event as a recipient may be shown it: the resources it may see now."""

    number: int
    at: datetime
    focus: str
    resources: Sequence[dict[str, Any]] = field(default_factory=tuple)


def _reference(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def _event_parameter(event: Event) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(event.number)},
        {"name": "timestamp", "valueInstant": fhir_instant(event.at)},
        {"name": "focus", "valueReference": {"reference": event.focus}},
    ]
    context = [ref for ref in map(_reference, event.resources) if ref != event.focus]
    parts += [{"name": "additional-context", "valueReference": {"reference": ref}} for ref in context]
    return {"name": "notification-event", "part": parts}


def notification_status(
    *, subscription_id: str, event: str, kind: str, status: str, events_since_start: int, events: Sequence[Event] = (), error: str | None = None
) -> dict[str, Any]:
    """The Backport-shaped ``Parameters`` status of a subscription, with ``events``."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{subscription_id}"}},
        {"name": "topic", "valueCanonical": TOPIC_BASE + event},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    parameters += [_event_parameter(e) for e in events]
    if error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def notification_bundle(
    *,
    subscription_id: str,
    event: str,
    kind: str,
    status: str,
    events_since_start: int,
    at: datetime,
    events: Sequence[Event] = (),
    content: str = "full-resource",
    fhir_base: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The notification Bundle: the status, then (``full-resource``) each event's resources."""
    notice = notification_status(
        subscription_id=subscription_id, event=event, kind=kind, status=status, events_since_start=events_since_start, events=events, error=error
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{notice['id']}",
            "resource": notice,
            "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    sent: set[str] = set()
    for resource in (r for e in events for r in e.resources) if content == "full-resource" else ():
        ref = _reference(resource)
        if ref in sent:
            continue
        sent.add(ref)
        entry: dict[str, Any] = {"fullUrl": f"{fhir_base}/{ref}"} if fhir_base else {}
        entry["resource"] = resource
        entry["request"] = {"method": "PUT", "url": ref}
        version = resource.get("meta", {}).get("versionId")
        entry["response"] = {"status": "200", **({"etag": f'W/"{version}"'} if version else {})}
        entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history", "timestamp": fhir_instant(at), "entry": entries}


def serialise(bundle: dict[str, Any]) -> bytes:
    """The bytes that are signed and sent."""
    return orjson.dumps(bundle)
