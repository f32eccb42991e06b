"""Agreement review figures for ``/metrics``: due for review within 90 days, overdue, lapsed."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from gateway.console.agreements import effective_status, review_state
from gateway.directory import current_agreements


def exposition(session: Session, today: date) -> bytes:
    """Prometheus gauges over the current version of every agreement that is not expired."""
    counts = {"due": 0, "overdue": 0, "lapsed": 0}
    for body in current_agreements(session):
        status = effective_status(body, today)
        if status == "lapsed":
            counts["lapsed"] += 1
        elif status in ("active", "suspended"):
            state = review_state(body, today)
            if state:
                counts[state] += 1
    lines = [
        "# HELP pathway_agreements_review_due Agreements in force whose review date is within 90 days",
        "# TYPE pathway_agreements_review_due gauge",
        f"pathway_agreements_review_due {counts['due']}",
        "# HELP pathway_agreements_review_overdue Agreements in force whose review date has passed",
        "# TYPE pathway_agreements_review_overdue gauge",
        f"pathway_agreements_review_overdue {counts['overdue']}",
        "# HELP pathway_agreements_lapsed Agreements no longer applying because their review is too long overdue",
        "# TYPE pathway_agreements_lapsed gauge",
        f"pathway_agreements_lapsed {counts['lapsed']}",
    ]
    return ("\n".join(lines) + "\n").encode()
