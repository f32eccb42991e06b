"""The audit trail: FHIR AuditEvents in a SHA-256 hash chain.

Each entry's hash covers its sequence number, its body and the previous
entry's hash, so changing, reordering or deleting a row breaks the chain at
that row. Appends lock the single head row, so they serialise across
processes. Periodic seals sign the head with the gateway key; anyone with the
public key can check a seal, and with it that nothing before it was altered.

An entry names a person (its patient, the acting-for person, the records
touched), so its body is stored sealed with the data keys (AES-GCM, bound to
its sequence number) and its ``patient`` column holds a blind index of the
reference. The hash covers the plaintext body: re-sealing under a new data key
(``pathway keys rotate-data``) leaves every hash and signed seal valid, and a
changed row is still found, either because it no longer opens (the
ciphertext was altered or moved) or because what it opens to does not match
its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.auth.keys import SigningKey, verify_detached
from gateway.store.crypto import Keyring, keyring_of
from gateway.store.hot import Hot
from gateway.store.models import AuditHeadRow, AuditRow, AuditSealRow
from gateway.store.repository import fhir_instant, now_utc

GENESIS = "0" * 64
AUDIT = AuditRow.__table__
HEAD = AuditHeadRow.__table__
# Compiled once (gateway.store.hot): an audit batch runs these three on every flush.
_LOCK_HEAD = Hot(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update())
_INSERT_ENTRIES = Hot(insert(AUDIT))
_ADVANCE_HEAD = Hot(update(HEAD).where(HEAD.c.id == 1))
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CLIENT_SYSTEM = "https://pathway.scot/Id/client"
# FHIR AuditEvent.action for each interaction
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "search-type": "E",
    "history-instance": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "transaction": "E",
    "operation": "E",
    "disclose": "R",
    "ingest": "C",
}
OUTCOMES = {"success": "0", "minor-failure": "4", "serious-failure": "8"}


@dataclass(frozen=True)
class Actor:
    """Who asked: the client system, its organisation, optionally the person it acts for."""

    client_id: str
    organization: str  # "system|value"
    acting_for: str | None = None
    user: str | None = None


def _hash(seq: int, prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(f"{seq}:{prev_hash}:".encode() + body).hexdigest()


def _associated(seq: int) -> bytes:
    return f"audit/{seq}".encode()


def _plain(keyring: Keyring, seq: int, body: bytes) -> bytes:
    """The entry's JSON; bodies written before entries were sealed are JSON already."""
    return body if body.startswith(b"{") else keyring.open(body, _associated(seq))


def read_event(session: Session, row: AuditRow) -> dict[str, Any]:
    """The AuditEvent an audit row holds."""
    return orjson.loads(_plain(keyring_of(session), row.seq, row.body))


def patient_index(session: Session, patient: str) -> str:
    """What the ``patient`` column holds for entries about ``patient`` ("Patient/id")."""
    return keyring_of(session).blind(patient)


def audit_event(
    interaction: str,
    actor: Actor | None,
    *,
    outcome: str = "success",
    detail: str | None = None,
    purpose: str | None = None,
    entities: list[str] = (),  # type: ignore[assignment]
    patient: str | None = None,
    subtype: dict[str, str] | None = None,
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """Build the AuditEvent body for one access or disclosure."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [subtype or {"system": INTERACTION, "code": interaction}],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": fhir_instant(recorded or now_utc()),
        "outcome": OUTCOMES[outcome],
        "agent": [],
        "source": {"observer": {"display": "Pathway gateway"}},
    }
    if detail:
        event["outcomeDesc"] = detail
    if purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON, "code": purpose}]}]
    if actor is not None:
        system, _, value = actor.organization.partition("|")
        event["agent"].append(
            {
                "who": {"identifier": {"system": CLIENT_SYSTEM, "value": actor.client_id}},
                "requestor": True,
            }
        )
        event["agent"].append({"who": {"identifier": {"system": system, "value": value}}, "requestor": False})
        if actor.acting_for:
            event["agent"].append({"who": {"reference": actor.acting_for}, "requestor": False})
        if actor.user:
            event["agent"][0]["altId"] = actor.user
    else:
        event["agent"].append({"who": {"display": "Pathway gateway"}, "requestor": True})
    refs = ([patient] if patient else []) + [e for e in entities if e != patient]
    if refs:
        event["entity"] = [
            {"what": {"reference": ref}, **({"role": _PATIENT_ROLE} if ref == patient else {})} for ref in refs
        ]
    return event


_PATIENT_ROLE = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}


def append_many(session: Session, entries: Sequence[tuple[dict[str, Any], str | None, str | None]]) -> list[int]:
    """Add (event, patient, client id) entries at the end of the chain inside the
    caller's transaction; returns their sequence numbers."""
    keyring = keyring_of(session)
    connection = session.connection()
    [(seq, digest)] = _LOCK_HEAD.rows(connection)
    rows = []
    recorded = now_utc()
    for event, patient, client_id in entries:
        seq += 1
        event["id"] = str(seq)
        body = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        prev_hash, digest = digest, _hash(seq, digest, body)
        rows.append(
            {
                "seq": seq,
                "recorded": recorded,
                "patient": keyring.blind(patient) if patient else None,
                "client_id": client_id,
                "action": event["subtype"][0]["code"],
                "body": keyring.seal(body, _associated(seq)),
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
    _INSERT_ENTRIES.execute(connection, rows)
    _ADVANCE_HEAD.execute(connection, [{"seq": seq, "hash": digest}])
    return [r["seq"] for r in rows]


def append(session: Session, event: dict[str, Any], *, patient: str | None = None, client_id: str | None = None) -> int:
    """Add one entry at the end of the chain inside the caller's transaction; returns its seq."""
    return append_many(session, [(event, patient, client_id)])[0]


def _rows(session: Session, batch: int = 2000) -> Iterator[AuditRow]:
    last = 0
    while True:
        rows = session.scalars(select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].seq


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a chain check: entries checked and the first broken link."""

    checked: int
    head_seq: int
    broken: str | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(session: Session, signing_key: SigningKey | None = None) -> ChainReport:
    """Walk the chain from the start and report the first link that does not hold."""
    keyring = keyring_of(session)
    prev_seq, prev_hash, checked = 0, GENESIS, 0
    head = session.get(AuditHeadRow, 1)
    for row in _rows(session):
        if row.seq != prev_seq + 1:
            return ChainReport(checked, head.seq, f"audit entry {prev_seq + 1} is missing (entry {row.seq} follows {prev_seq})")
        if row.prev_hash != prev_hash:
            return ChainReport(checked, head.seq, f"audit entry {row.seq} does not link to entry {prev_seq} (reordered or replaced)")
        try:
            body = _plain(keyring, row.seq, row.body)
        except KeyError as missing:
            return ChainReport(checked, head.seq, f"audit entry {row.seq} cannot be opened: {missing.args[0]}")
        except (InvalidTag, ValueError):
            return ChainReport(checked, head.seq, f"audit entry {row.seq} was changed: its sealed content does not open")
        if _hash(row.seq, row.prev_hash, body) != row.hash:
            return ChainReport(checked, head.seq, f"audit entry {row.seq} was changed: its content does not match its hash")
        prev_seq, prev_hash, checked = row.seq, row.hash, checked + 1
    if head.seq != prev_seq or head.hash != prev_hash:
        return ChainReport(checked, head.seq, f"audit entries {prev_seq + 1} to {head.seq} are missing (chain head is {head.seq})")
    if signing_key is not None:
        problem = _check_seals(session, signing_key.jwks())
        if problem:
            return ChainReport(checked, head.seq, problem)
    return ChainReport(checked, head.seq, None)


_RESEAL = update(AUDIT).where(AUDIT.c.seq == bindparam("b_seq"))


def reseal_entries(session: Session, keyring: Keyring, batch: int = 1000) -> int:
    """Seal every entry under ``keyring``'s active key (entries under older keys, and
    entries written in clear before entries were sealed); hashes do not change.
    Returns how many entries were re-sealed."""
    connection = session.connection()
    count, last = 0, 0
    while rows := connection.execute(
        select(AUDIT.c.seq, AUDIT.c.body).where(AUDIT.c.seq > last).order_by(AUDIT.c.seq).limit(batch)
    ).all():
        changes = [
            {"b_seq": row.seq, "body": keyring.seal(_plain(keyring, row.seq, row.body), _associated(row.seq))}
            for row in rows
            if row.body.startswith(b"{") or keyring.sealed_with(row.body) != keyring.active
        ]
        if changes:
            connection.execute(_RESEAL, changes)
        count, last = count + len(changes), rows[-1].seq
    return count


def reindex_patients(session: Session, keyring: Keyring) -> int:
    """Replace clear ``Patient/id`` references left in the ``patient`` column by entries
    written before it held blind indexes. Returns how many entries changed."""
    connection = session.connection()
    clear = connection.execute(select(AUDIT.c.seq, AUDIT.c.patient).where(AUDIT.c.patient.like("%/%"))).all()
    if clear:
        connection.execute(
            update(AUDIT).where(AUDIT.c.seq == bindparam("b_seq")),
            [{"b_seq": row.seq, "patient": keyring.blind(row.patient)} for row in clear],
        )
    return len(clear)


def seal(session: Session, signing_key: SigningKey) -> AuditSealRow | None:
    """Sign the current chain head, unless it is already sealed."""
    head = session.get(AuditHeadRow, 1)
    if head.seq == 0 or session.get(AuditSealRow, head.seq) is not None:
        return None
    moment = now_utc()
    payload = _seal_payload(head.seq, head.hash, fhir_instant(moment))
    row = AuditSealRow(seq=head.seq, hash=head.hash, signed_at=moment, jws=signing_key.sign_detached(payload))
    session.add(row)
    session.flush()
    return row


def _seal_payload(seq: int, digest: str, signed_at: str) -> bytes:
    return orjson.dumps({"seq": seq, "hash": digest, "signed_at": signed_at}, option=orjson.OPT_SORT_KEYS)


def _check_seals(session: Session, jwks: dict[str, Any]) -> str | None:
    for sealed in session.scalars(select(AuditSealRow).order_by(AuditSealRow.seq)):
        payload = _seal_payload(sealed.seq, sealed.hash, fhir_instant(sealed.signed_at))
        if not verify_detached(sealed.jws, payload, jwks):
            return f"audit seal at entry {sealed.seq} has a bad signature"
        entry = session.get(AuditRow, sealed.seq)
        if entry is None or entry.hash != sealed.hash:
            return f"audit entry {sealed.seq} does not match the signed seal of the chain head"
    return None
