"""Agreements in the console: versions, review dates and diffs (the lifecycle itself is
``gateway.sharing.agreement_lifecycle``). Only the highest version counts for decisions
(DESIGN §6.1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.agreements import lapse_day
from gateway.store.models import AgreementRow

REVIEW_DUE_DAYS = 90

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
    """The status as decisions see it: past its end date an agreement is expired; an active one
    whose review is overdue past its lapse time has lapsed."""
    end = body.get("end")
    if end and str(end) < today.isoformat():
        return "expired"
    review = body.get("review_date")
    lapses_on = lapse_day(date.fromisoformat(str(review)[:10]), body.get("lapse_after_days")) if review else None
    if body.get("status") == "active" and lapses_on is not None and today >= lapses_on:
        return "lapsed"
    return body.get("status", "")


def review_state(body: dict[str, Any], today: date) -> str:
    """``overdue`` past the review date, ``due`` within 90 days of it, else empty."""
    review = body.get("review_date")
    if not review:
        return ""
    due = date.fromisoformat(str(review)[:10])
    if due < today:
        return "overdue"
    return "due" if due <= today + timedelta(days=REVIEW_DUE_DAYS) else ""


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
