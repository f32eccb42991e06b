"""Re-sealing everything about people under a new data key (``pathway keys rotate-data``)."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from gateway.audit.chain import reindex_patients, reseal_entries
from gateway.store.crypto import SEALED_TEXT, Keyring, open_text, seal_text
from gateway.store.models import BreakGlassRow, MatchReviewRow, QuarantineRow
from gateway.store.repository import Repository

QUARANTINE = QuarantineRow.__table__
MATCH_REVIEW = MatchReviewRow.__table__
BREAK_GLASS = BreakGlassRow.__table__


def _reseal_ingest_rows(session: Session, keyring: Keyring) -> dict[str, int]:
    """Quarantined records and match reviews, sealed by ingest with their source as associated data."""
    connection = session.connection()
    counts = {}
    for name, table, column, prefix in (
        ("quarantine", QUARANTINE, QUARANTINE.c.record, "quarantine"),
        ("match_review", MATCH_REVIEW, MATCH_REVIEW.c.detail, "match-review"),
    ):
        rows = connection.execute(
            select(table.c.id, table.c.source, table.c.key_id, column).where(
                column.is_not(None), table.c.key_id != keyring.active
            )
        ).all()
        changes = []
        for row in rows:
            associated = f"{prefix}/{row.source}".encode()
            key_id, sealed = keyring.encrypt(keyring.decrypt(row.key_id, row[3], associated), associated)
            changes.append({"b_id": row.id, "key_id": key_id, column.key: sealed})
        if changes:
            connection.execute(update(table).where(table.c.id == bindparam("b_id")), changes)
        counts[name] = len(changes)
    return counts


def _reseal_break_glass(session: Session, keyring: Keyring) -> int:
    """Break-glass reasons and review notes, sealed text bound to their grant (clear ones from
    before sealing are sealed now)."""
    connection = session.connection()
    current = f"{SEALED_TEXT}{keyring.active}:"
    changes = []
    for row in connection.execute(select(BREAK_GLASS.c.id, BREAK_GLASS.c.reason, BREAK_GLASS.c.review_note)):
        change = {}
        for column, part in (("reason", "reason"), ("review_note", "review-note")):
            stored = row._mapping[column]
            if stored is not None and not stored.startswith(current):
                associated = f"break-glass/{row.id}/{part}"
                change[column] = seal_text(keyring, open_text(keyring, stored, associated) or "", associated)
        if change:
            changes.append({"b_id": row.id, "reason": change.get("reason", row.reason), "review_note": change.get("review_note", row.review_note)})
    if changes:
        connection.execute(update(BREAK_GLASS).where(BREAK_GLASS.c.id == bindparam("b_id")), changes)
    return len(changes)


def reseal_all(session: Session, keyring: Keyring) -> dict[str, int]:
    """Seal every person-level row not yet under ``keyring``'s active key, inside the
    caller's transaction; returns how many rows of each kind were re-sealed."""
    return {
        "resources": Repository(session, keyring).reencrypt_all(),
        "audit_entries": reseal_entries(session, keyring),
        "audit_patients_blinded": reindex_patients(session, keyring),
        **_reseal_ingest_rows(session, keyring),
        "break_glass": _reseal_break_glass(session, keyring),
    }
