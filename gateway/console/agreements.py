"""Agreements in the console: versions, review dates, diffs and the approval lifecycle.

Every lifecycle change (draft → active, active → suspended, suspended → active)
is a new version row, so the history shows who approved what and when; only the
highest version counts for decisions (DESIGN §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.models import AgreementRow
from gateway.store.repository import now_utc

REVIEW_DUE_DAYS = 60
# status now -> {status it may move to: what the move is called}
TRANSITIONS: dict[str, dict[str, str]] = {
    "draft": {"active": "Approve"},
    "active": {"suspended": "Suspend"},
    "suspended": {"active": "Reinstate"},
}


class LifecycleRefused(ValueError):
    """The agreement cannot make this move; the message says why."""


@dataclass(frozen=True)
class Version:
    version: int
    status: str
    loaded: str
    approved_by: str
    body: dict[str, Any]


def versions(session: Session, agreement_id: str | None = None) -> dict[str, list[Version]]:
    """Every agreement's versions, newest first."""
    query = select(AgreementRow).order_by(AgreementRow.id, AgreementRow.version.desc())
    if agreement_id is not None:
        query = query.where(AgreementRow.id == agreement_id)
    found: dict[str, list[Version]] = {}
    for row in session.scalars(query):
        found.setdefault(row.id, []).append(Version(row.version, row.status, row.loaded.strftime("%Y-%m-%d %H:%M"), row.approved_by or "", orjson.loads(row.body)))
    return found


def effective_status(body: dict[str, Any], today: date) -> str:
    """The status as decisions see it: past its end date an agreement is expired."""
    end = body.get("end")
    return "expired" if end and str(end) < today.isoformat() else body.get("status", "")


def review_state(body: dict[str, Any], today: date) -> str:
    """``overdue`` past the review date, ``due`` within 60 days of it, else empty."""
    review = body.get("review_date")
    if not review:
        return ""
    due = date.fromisoformat(str(review)[:10])
    if due < today:
        return "overdue"
    return "due" if due <= today + timedelta(days=REVIEW_DUE_DAYS) else ""


def change_status(session: Session, agreement_id: str, to: str, by: str) -> AgreementRow:
    """Write the next version of ``agreement_id`` with status ``to``, approved by ``by``."""
    newest = session.scalars(
        select(AgreementRow).where(AgreementRow.id == agreement_id).order_by(AgreementRow.version.desc()).with_for_update()
    ).first()
    if newest is None:
        raise LifecycleRefused(f"there is no agreement {agreement_id}")
    allowed = TRANSITIONS.get(newest.status, {})
    if to not in allowed:
        moves = ", ".join(f"{allowed[s].lower()} ({s})" for s in allowed) or "none"
        raise LifecycleRefused(f"agreement {agreement_id} version {newest.version} is {newest.status}; it cannot become {to} (allowed: {moves})")
    body = orjson.loads(newest.body) | {"status": to, "version": newest.version + 1}
    row = AgreementRow(
        id=agreement_id,
        version=newest.version + 1,
        status=to,
        body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode(),
        loaded=now_utc(),
        approved_by=by,
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class Change:
    field: str
    before: str
    after: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def diff(older: dict[str, Any], newer: dict[str, Any]) -> list[Change]:
    """What changed between two versions, field by field; lists as items added and removed."""
    changes = []
    for key in sorted(set(older) | set(newer)):
        before, after = older.get(key), newer.get(key)
        if before == after:
            continue
        if isinstance(before, list) or isinstance(after, list):
            old_items, new_items = [_text(v) for v in before or []], [_text(v) for v in after or []]
            changes.append(Change(key, "", "", tuple(i for i in new_items if i not in old_items), tuple(i for i in old_items if i not in new_items)))
        else:
            changes.append(Change(key, _text(before), _text(after)))
    return changes
