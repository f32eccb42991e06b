"""Signing off a quarter: the partnership lead confirms the quarter's data only after seeing
its completeness report, and only that report: the form carries the digest of what was
shown, and a report that changed since (a record corrected or added) must be looked at again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.reporting.completeness import CompletenessReport
from gateway.reporting.models import ReportSignOffRow
from gateway.store.repository import now_utc


class SignOffRefused(Exception):
    """Why the quarter cannot be confirmed now, in words the lead can act on."""


def latest_sign_off(session: Session, quarter: str) -> ReportSignOffRow | None:
    query = select(ReportSignOffRow).where(ReportSignOffRow.quarter == quarter).order_by(ReportSignOffRow.id.desc()).limit(1)
    return session.scalars(query).first()


def sign_off(session: Session, report: CompletenessReport, seen_digest: str, username: str, organization: str) -> ReportSignOffRow:
    """Record the confirmation of ``report``'s quarter, made on the report with ``seen_digest``."""
    if not seen_digest:
        raise SignOffRefused("open the quarter's completeness report before confirming it")
    if seen_digest != report.digest():
        raise SignOffRefused(f"the completeness report for {report.quarter} has changed since you opened it; look at it again before confirming")
    row = ReportSignOffRow(
        quarter=str(report.quarter), confirmed_by=username, organization=organization, confirmed_at=now_utc(),
        completeness_digest=seen_digest, records=report.records, complete=report.complete,
    )
    session.add(row)
    session.flush()
    return row
