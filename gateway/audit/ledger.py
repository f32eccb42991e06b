"""The disclosure ledger: who received what about a person, when, and on what basis.

The ``patient`` column holds a blind index of the person's reference, so the
ledger can be searched by person without naming anyone in the table; the other
columns hold references (opaque ids), organisations and codes.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import ColumnElement, insert
from sqlalchemy.orm import Session

from gateway.store.crypto import keyring_of
from gateway.store.hot import Hot
from gateway.store.models import DisclosureRow

LEDGER = DisclosureRow.__table__
_INSERT = Hot(insert(LEDGER))  # in every read's audit batch: compiled once


def disclosure(
    *,
    at: Any,
    patient: str,
    recipient: str,
    acting_for: str | None,
    client_id: str | None,
    purpose: str,
    channel: str,
    resources: list[str],
    agreements: list[str],
    consents: list[str],
    break_glass: str | None,
    one_off: str | None = None,
) -> dict[str, Any]:
    """One ledger row, ready to insert."""
    return {
        "at": at,
        "patient": patient,
        "recipient": recipient,
        "acting_for": acting_for,
        "client_id": client_id,
        "purpose": purpose,
        "channel": channel,
        "resources": orjson.dumps(resources).decode(),
        "agreements": orjson.dumps(agreements).decode(),
        "consents": orjson.dumps(consents).decode(),
        "break_glass": break_glass,
        "one_off": one_off,
    }


def insert_disclosures(session: Session, rows: list[dict[str, Any]]) -> None:
    """Add ledger rows made by :func:`disclosure` (their patient stored as a blind index)."""
    if rows:
        blind = keyring_of(session).blind
        _INSERT.execute(session.connection(), [{**row, "patient": blind(row["patient"])} for row in rows])


def about_patient(session: Session, patient: str) -> ColumnElement[bool]:
    """The condition selecting the ledger rows about ``patient`` ("Patient/id")."""
    return DisclosureRow.patient == keyring_of(session).blind(patient)


def ledger_entry(row: DisclosureRow) -> dict[str, Any]:
    """A ledger row as IG officers read it."""
    return {
        "at": row.at.isoformat(),
        "recipient": row.recipient,
        "acting_for": row.acting_for,
        "client": row.client_id,
        "purpose": row.purpose,
        "channel": row.channel,
        "resources": orjson.loads(row.resources),
        "agreements": orjson.loads(row.agreements),
        "consents": orjson.loads(row.consents),
        "break_glass": row.break_glass,
        "one_off": row.one_off,
    }
