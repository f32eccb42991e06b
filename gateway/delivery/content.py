"""What a recipient may be shown of one event, decided when it is shown.

The worker (each send) and ``$events`` (each replay) read the event's focus and
extra resources as they are now and pass them through the access policy for the
recipient, so a consent withdrawn or an agreement ended after the event stops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from gateway.auth.tokens import Principal
from gateway.fhir.access import AccessPolicy, Caller
from gateway.store.repository import Repository, Stored

# The client id deliveries are audited under (the recipient organisation is the other agent).
DELIVERY_CLIENT_ID = "pathway-delivery"
# Events whose notification carries no resources: the recipient must learn of them even
# though (for a withdrawn consent) it may no longer see anything about the person.
NOTICE_ONLY_EVENTS = frozenset({"withdrawal-notice"})


@dataclass
class Shown:
    """The resources of one event a recipient may see (focus first), with the versions sent
    ("Type/id/_history/n") and the disclosure-ledger rows to record if they are sent."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    sent_refs: list[str] = field(default_factory=list)
    disclosures: list[dict[str, Any]] = field(default_factory=list)


def recipient_caller(recipient: str, purpose: str, acting_for: str | None) -> Caller:
    """The recipient organisation (or the person a portal acts for) as the policy's caller."""
    principal = Principal(DELIVERY_CLIENT_ID, recipient, frozenset({"system/*.read"}), frozenset(), "system", 0)
    return Caller(principal, purpose, acting_for)


def shown_to(
    session: Session,
    repo: Repository,
    policy: AccessPolicy,
    *,
    event: str,
    recipient: str,
    purpose: str,
    acting_for: str | None,
    focus: str,
    extra_refs: Sequence[str] = (),
) -> Shown | str:
    """What ``recipient`` may be shown of an event now, or why nothing of it may be shown."""
    if event in NOTICE_ONLY_EVENTS:
        return Shown()
    stored: list[Stored] = []
    for ref in [focus, *[r for r in extra_refs if r != focus]]:
        kind, _, ident = ref.partition("/")
        current = repo.current(kind, ident)
        if current is not None and not current.deleted:
            stored.append(current)
    if not stored or stored[0].reference != focus:
        return f"{focus} no longer exists"
    visible = policy.visible(session, recipient_caller(recipient, purpose, acting_for), stored, channel="push")
    if visible.resources[0] is None:
        return f"{recipient} may no longer see {focus} for {purpose}"
    shown = [(s, r) for s, r in zip(stored, visible.resources) if r is not None]
    return Shown([r for _, r in shown], [f"{s.reference}/_history/{s.version_id}" for s, _ in shown], visible.disclosures)
