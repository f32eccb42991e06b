"""Governance notices through the delivery outbox: an agreement's lapse to every party, and
break-glass alerts to the IG officers as an email-shaped Communication.

Each notice is a Communication held by its recipient organisation (so the outbox's send-time
check lets that recipient, and only it, receive it) and queued with the outbox's ``enqueue``.
Notices name no person: a break-glass alert carries the override's id, not whose record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gateway.conf import Governance
from gateway.delivery.outbox import Queued, enqueue
from gateway.directory import conf_document
from gateway.store.crypto import keyring_of
from gateway.store.repository import Repository, now_utc

CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/communication-category"
EMAIL_MODE = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "EMAILWRIT", "display": "email"}


def governance(session: Session) -> Governance:
    """The ``governance`` settings of the newest imported ``agreements.yaml`` (defaults before any import)."""
    try:
        document = conf_document(session, "agreements.yaml")
    except LookupError:
        return Governance()
    return Governance.model_validate(document.get("governance") or {})


def _organization(repo: Repository, organization_id: str) -> dict[str, Any] | None:
    stored = repo.current("Organization", organization_id)
    return None if stored is None or stored.deleted else stored.resource


def notify(
    session: Session, *, event: str, recipient: str, subject: str, text: str, category: str, to: list[dict[str, Any]]
) -> list[Queued]:
    """Store a Communication held by ``recipient`` ("system|value") and queue ``event`` about it."""
    repo = Repository(session, keyring_of(session))
    communication = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        "medium": [{"coding": [EMAIL_MODE]}],
        "sent": now_utc().isoformat(),
        "recipient": to,
        "topic": {"text": subject},
        "payload": [{"contentString": text}],
    }
    stored = repo.create(communication, recipient)
    return enqueue(session, event=event, recipient=recipient, focus=stored.reference, patient=None, purpose="HOPERAT")


def contacts(session: Session, organization_id: str) -> list[dict[str, Any]]:
    """The organisation itself and its published email addresses, as Communication recipients."""
    resource = _organization(Repository(session, keyring_of(session)), organization_id) or {}
    emails = [t["value"] for t in resource.get("telecom", []) if t.get("system") == "email" and t.get("value")]
    return [{"reference": f"Organization/{organization_id}", "display": resource.get("name", organization_id)}] + [
        {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"mailto:{email}"}, "display": email} for email in emails
    ]
