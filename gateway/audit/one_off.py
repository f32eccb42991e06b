"""One-off disclosures (ICO data sharing code's request form): a police or court request, an
Adult Support and Protection inquiry. An IG officer records who asked, why, the lawful basis,
why it was necessary, what was disclosed, the decision and who made it. A disclosure made goes
into the person's ledger like any other, so it appears in their subject-access export."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.audit.ledger import disclosure, insert_disclosures
from gateway.sharing.governance_models import OneOffDisclosureRow
from gateway.store.crypto import keyring_of, open_text, seal_text
from gateway.store.repository import now_utc

DECISIONS = ("disclosed", "refused")
PURPOSES = ("TREAT", "ETREAT", "CAREMGT", "HOPERAT", "PUBHLTH")


class OneOffRefused(ValueError):
    """The record is incomplete; the message says what is missing."""


def record(
    session: Session,
    *,
    patient: str,
    requester: str,
    purpose: str,
    lawful_basis: str,
    necessity: str,
    disclosed: str,
    resources: list[str],
    decision: str,
    decided_by: str,
    recorded_by: str,
    client_id: str | None = None,
) -> OneOffDisclosureRow:
    """Record the decision on a one-off request; a disclosure made is added to the ledger."""
    fields = {"requester": requester, "lawful basis": lawful_basis, "necessity": necessity, "what was disclosed": disclosed, "decision-maker": decided_by}
    missing = [name for name, value in fields.items() if len(value.strip()) < 3]
    if missing:
        raise OneOffRefused(f"fill in: {', '.join(missing)}")
    if decision not in DECISIONS:
        raise OneOffRefused(f"decision must be one of {', '.join(DECISIONS)}")
    if purpose not in PURPOSES:
        raise OneOffRefused(f"purpose must be one of {', '.join(PURPOSES)}")
    if not patient.startswith("Patient/"):
        raise OneOffRefused("the person must be a Patient reference")
    keyring, row_id, moment = keyring_of(session), str(uuid.uuid4()), now_utc()
    row = OneOffDisclosureRow(
        id=row_id,
        patient=keyring.blind(patient),
        requester=requester.strip()[:200],
        purpose=purpose,
        lawful_basis=lawful_basis.strip()[:300],
        necessity=seal_text(keyring, necessity.strip(), f"one-off/{row_id}/necessity"),
        disclosed=seal_text(keyring, disclosed.strip(), f"one-off/{row_id}/disclosed"),
        decision=decision,
        decided_by=decided_by.strip()[:200],
        recorded_by=recorded_by[:200],
        at=moment,
    )
    session.add(row)
    if decision == "disclosed":
        entry = disclosure(at=moment, patient=patient, recipient=row.requester, acting_for=None, client_id=client_id, purpose=purpose,
                           channel="one-off", resources=resources, agreements=[], consents=[], break_glass=None, one_off=row_id)
        insert_disclosures(session, [entry])
    detail = f"one-off disclosure {row_id} to {row.requester} for {purpose} under {row.lawful_basis}: {decision} by {row.decided_by}"
    append(session, audit_event("disclose" if decision == "disclosed" else "operation", Actor(client_id or "console", row.requester, user=recorded_by), purpose=purpose, patient=patient, entities=resources, detail=detail), patient=patient, client_id=client_id)
    return row


def one_off_basis(session: Session, one_off_id: str) -> str:
    """How a one-off disclosure reads in the ledger's basis: its lawful basis, necessity and decision-maker."""
    row = session.get(OneOffDisclosureRow, one_off_id)
    if row is None:
        return f"one-off disclosure {one_off_id}"
    necessity = open_text(keyring_of(session), row.necessity, f"one-off/{row.id}/necessity")
    disclosed = open_text(keyring_of(session), row.disclosed, f"one-off/{row.id}/disclosed")
    return f"one-off disclosure {row.id} under {row.lawful_basis}, decided by {row.decided_by}; necessary because: {necessity}; disclosed: {disclosed}"
