"""The notification Bundle a subscriber receives.

FHIR R4 has no ``SubscriptionStatus`` resource. The R4 Subscriptions Backport
(http://hl7.org/fhir/uv/subscriptions-backport) carries the same content in a
``Parameters`` resource, and so does Pathway: the first entry of a ``history``
Bundle is that Parameters resource with

- ``subscription``: the recipient's subscription (``Subscription/{id}``),
- ``topic``: ``https://pathway.scot/SubscriptionTopic/{event}``,
- ``status`` ``active``, ``type`` ``event-notification``,
- ``events-since-subscription-start``: the event's number,
- ``notification-event``: parts ``event-number``, ``timestamp``, ``focus`` and one
  ``additional-context`` per further resource sent.

The resources the recipient may see follow, each as a history entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from gateway.store.repository import fhir_instant

TOPIC_BASE = "https://pathway.scot/SubscriptionTopic/"
STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"


def _reference(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def notification_status(
    *, subscription_id: str, event: str, event_number: int, at: datetime, focus: str, context: Sequence[str]
) -> dict[str, Any]:
    """The Backport-shaped ``Parameters`` notification for one event."""
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(event_number)},
        {"name": "timestamp", "valueInstant": fhir_instant(at)},
        {"name": "focus", "valueReference": {"reference": focus}},
    ]
    parts += [{"name": "additional-context", "valueReference": {"reference": ref}} for ref in context]
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"Subscription/{subscription_id}"}},
            {"name": "topic", "valueCanonical": TOPIC_BASE + event},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": str(event_number)},
            {"name": "notification-event", "part": parts},
        ],
    }


def notification_bundle(
    *,
    subscription_id: str,
    event: str,
    event_number: int,
    at: datetime,
    focus: str,
    resources: Sequence[dict[str, Any]],
    fhir_base: str | None = None,
) -> bytes:
    """The serialised Bundle: the notification, then ``resources`` (focus first when sent)."""
    context = [ref for ref in map(_reference, resources) if ref != focus]
    status = notification_status(
        subscription_id=subscription_id, event=event, event_number=event_number, at=at, focus=focus, context=context
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status['id']}",
            "resource": status,
            "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    for resource in resources:
        ref = _reference(resource)
        entry: dict[str, Any] = {"fullUrl": f"{fhir_base}/{ref}"} if fhir_base else {}
        entry["resource"] = resource
        entry["request"] = {"method": "PUT", "url": ref}
        version = resource.get("meta", {}).get("versionId")
        entry["response"] = {"status": "200", **({"etag": f'W/"{version}"'} if version else {})}
        entries.append(entry)
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": fhir_instant(at),
        "entry": entries,
    }
    return orjson.dumps(bundle)
