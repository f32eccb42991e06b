"""The partnership lead's figures: the pathway metrics plus the series the charts need."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.pathway import codes
from gateway.pathway.config import PathwayConf
from gateway.pathway.metrics import PathwayRecord, Stay, collect, figures
from gateway.pathway.overdue import first_missed_review
from gateway.pathway.stages import STAGES
from gateway.store.repository import Repository

# Wait bands in days: (label, upper bound inclusive); the 3-week standard falls after "2–3 wk".
WAIT_BANDS = (("0–1 wk", 7), ("1–2 wk", 14), ("2–3 wk", 21), ("3–4 wk", 28), ("4–8 wk", 56), ("8–12 wk", 84), ("12+ wk", 10**6))


@dataclass(frozen=True)
class OverdueReview:
    task: str
    patient: str
    facility: str
    admitted: str
    review: int
    due: str
    days_overdue: int


def wait_bands(days: list[int]) -> list[tuple[str, float]]:
    counts = Counter(next(label for label, upper in WAIT_BANDS if d <= upper) for d in days)
    return [(label, counts.get(label, 0)) for label, _ in WAIT_BANDS]


def early_exits_by_month(records: list[PathwayRecord], today: date, months: int = 12) -> list[tuple[str, float]]:
    """Early exits per calendar month over the last ``months`` months, oldest first."""
    keys = []
    year, month = today.year, today.month
    for _ in range(months):
        keys.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    counts = Counter((r.stay.ended.year, r.stay.ended.month) for r in records if r.stay and r.stay.early_exit and r.stay.ended)
    return [(date(y, m, 1).strftime("%b %y"), counts.get((y, m), 0)) for y, m in reversed(keys)]


def overdue_reviews(repo: Repository, conf: PathwayConf, today: date, facility_name: Any) -> list[OverdueReview]:
    """Stays in progress whose earliest missed review is past due, most overdue first."""
    found = []
    criteria = [("code", [f"{codes.TASK_TYPE_SYSTEM}|{codes.FACILITY_TASK}"]), ("status", ["in-progress"])]
    for _, task in repo.search("Task", criteria):
        resource = task.resource
        start = (resource.get("executionPeriod") or {}).get("start")
        if not start:
            continue
        reviews = [
            date.fromisoformat(str((s.resource.get("period") or {}).get("start"))[:10])
            for _, s in repo.search("Encounter", [("based-on", [resource["focus"]["reference"]])])
            if (s.resource.get("period") or {}).get("start") and (s.resource.get("class") or {}).get("code") == "review"
        ]
        admitted = date.fromisoformat(str(start)[:10])
        missed = first_missed_review(Stay(admitted, None, False, reviews), conf.review_interval_weeks, conf.residential_weeks, today)
        if missed is not None:
            k, due = missed
            owner = (resource.get("owner") or {}).get("reference", "")
            found.append(OverdueReview(task.id, task.patient or "", facility_name(owner), admitted.isoformat(), k, due.isoformat(), (today - due).days))
    return sorted(found, key=lambda o: -o.days_overdue)


def dashboard_figures(repo: Repository, conf: PathwayConf, today: date) -> dict[str, Any]:
    """Everything the dashboard shows, from one pass over the pathway records."""
    records = collect(repo)
    summary = figures(records, conf, today)
    to_admission = [(r.stay.admitted - r.referred).days for r in records if r.stay]
    to_treatment = [(r.decided - r.referred).days for r in records if r.decided]
    return {
        "summary": summary,
        "stages": [(stage, summary["stages"].get(stage, 0)) for stage in STAGES],
        "admission_waits": wait_bands(to_admission),
        "treatment_waits": wait_bands(to_treatment),
        "admitted_within_standard": sum(1 for d in to_admission if d <= conf.treatment_standard_days),
        "admissions": len(to_admission),
        "early_exits": early_exits_by_month(records, today),
    }
