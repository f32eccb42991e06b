"""Timeliness figures computed from the pathway's own records (DESIGN §10 time limits).

- referral to decision: the referral's date to the resource allocation decision's date;
- referral to admission: the referral's date to the facility's admission date;
- treated within the standard (Scottish waiting-times standard, 90% within 3 weeks):
  treatment starts with the allocation decision (assessment support or the community
  pathway begins). People still waiting beyond the standard count as not treated within
  it; people waiting less long are not counted yet;
- reviews on time: during each stay a review falls due every review interval after
  admission; the k-th due date is met when k reviews were held by then;
- early exits: stays ended as failed with reason early-exit, over admissions.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from gateway.pathway import codes
from gateway.pathway.config import PathwayConf
from gateway.pathway.moves import decision_of, stage_of
from gateway.store.repository import Repository, now_utc


def _day(value: Any) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


@dataclass
class Stay:
    admitted: date
    ended: date | None
    early_exit: bool
    reviews: list[date] = field(default_factory=list)


@dataclass
class PathwayRecord:
    """One person's pathway as the figures need it."""

    referred: date
    stage: str
    decided: date | None = None
    decision: str | None = None
    stay: Stay | None = None


def _tasks(repo: Repository, kind: str) -> list[dict[str, Any]]:
    return [s.resource for _, s in repo.search("Task", [("code", [f"{codes.TASK_TYPE_SYSTEM}|{kind}"])])]


def collect(repo: Repository) -> list[PathwayRecord]:
    """Every pathway with its referral date, decision, and stay."""
    decisions: dict[str, dict[str, Any]] = {}
    for _, stored in repo.search("QuestionnaireResponse", [("questionnaire", [codes.RESOURCE_ALLOCATION])]):
        for based_on in stored.resource.get("basedOn", []):
            earlier = decisions.get(based_on.get("reference"))
            if earlier is None or str(stored.resource.get("authored")) < str(earlier.get("authored")):
                decisions[based_on.get("reference")] = stored.resource
    stays = {}
    for task in _tasks(repo, codes.FACILITY_TASK):
        period = task.get("executionPeriod") or {}
        if task.get("status") not in ("in-progress", "on-hold", "completed", "failed") or not period.get("start"):
            continue
        reviews = [
            _day((s.resource.get("period") or {}).get("start"))
            for _, s in repo.search("Encounter", [("based-on", [task["focus"]["reference"]])])
            if (s.resource.get("class") or {}).get("code") == "review"
        ]
        early = task["status"] == "failed" and codes.has_code(task.get("statusReason"), codes.TASK_REASON_SYSTEM, codes.EARLY_EXIT)
        stays[task["partOf"][0]["reference"]] = Stay(_day(period["start"]), _day(period.get("end")), early, sorted(d for d in reviews if d))  # type: ignore[arg-type]
    records = []
    for _, stored in repo.search("Task", [("code", [f"{codes.TASK_TYPE_SYSTEM}|{codes.PATHWAY_TASK}"])]):
        task = stored.resource
        decision = decisions.get(task["focus"]["reference"])
        records.append(
            PathwayRecord(
                referred=_day(task.get("authoredOn")) or stored.last_updated.date(),
                stage=stage_of(task) or "referral",
                decided=_day(decision.get("authored")) if decision else None,
                decision=decision_of(decision) if decision else None,
                stay=stays.get(stored.reference),
            )
        )
    return records


def _days(spans: list[int]) -> dict[str, Any]:
    if not spans:
        return {"count": 0, "median": None, "mean": None}
    return {"count": len(spans), "median": statistics.median(spans), "mean": round(statistics.fmean(spans), 1)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def reviews_due(stay: Stay, interval_weeks: int, residential_weeks: int, today: date) -> tuple[int, int]:
    """(reviews due by today, of which held on time) for one stay."""
    last = min(stay.ended or today, stay.admitted + timedelta(weeks=residential_weeks), today)
    due = on_time = 0
    k = 1
    while (due_date := stay.admitted + timedelta(weeks=interval_weeks * k)) <= last:
        due += 1
        on_time += sum(1 for held in stay.reviews if held <= due_date) >= k
        k += 1
    return due, on_time


def figures(records: list[PathwayRecord], conf: PathwayConf, today: date) -> dict[str, Any]:
    """The timeliness figures for ``records`` as of ``today``."""
    to_decision = [(r.decided - r.referred).days for r in records if r.decided]
    to_admission = [(r.stay.admitted - r.referred).days for r in records if r.stay]
    standard = conf.treatment_standard_days
    within = sum(1 for days in to_decision if days <= standard)
    still_waiting_too_long = sum(1 for r in records if r.decided is None and (today - r.referred).days > standard)
    eligible = len(to_decision) + still_waiting_too_long
    due = on_time = 0
    for stay in (r.stay for r in records if r.stay):
        stay_due, stay_on_time = reviews_due(stay, conf.review_interval_weeks, conf.residential_weeks, today)
        due, on_time = due + stay_due, on_time + stay_on_time
    admissions = sum(1 for r in records if r.stay)
    early_exits = sum(1 for r in records if r.stay and r.stay.early_exit)
    treated_share, reviews_share = _share(within, eligible), _share(on_time, due)
    return {
        "as_of": today.isoformat(),
        "referrals": len(records),
        "stages": dict(sorted(Counter(r.stage for r in records).items())),
        "decisions": dict(sorted(Counter(r.decision for r in records if r.decision).items())),
        "referral_to_decision_days": _days(to_decision) | {"limit_days": conf.referral_decision_days, "within_limit": _share(sum(1 for d in to_decision if d <= conf.referral_decision_days), len(to_decision))},
        "referral_to_admission_days": _days(to_admission),
        "treated_within_standard": {
            "standard_days": standard,
            "target": conf.treated_within_standard_target,
            "counted": eligible,
            "within": within,
            "share": treated_share,
            "met": treated_share is not None and treated_share >= conf.treated_within_standard_target,
        },
        "reviews_on_time": {
            "interval_weeks": conf.review_interval_weeks,
            "target": conf.reviews_on_time_target,
            "due": due,
            "on_time": on_time,
            "share": reviews_share,
            "met": reviews_share is not None and reviews_share >= conf.reviews_on_time_target,
        },
        "early_exits": {"count": early_exits, "admissions": admissions, "share": _share(early_exits, admissions)},
    }


def pathway_metrics(repo: Repository, conf: PathwayConf, today: date | None = None) -> dict[str, Any]:
    """The figures served at ``GET /pathway/metrics``."""
    return figures(collect(repo), conf, today or now_utc().date())
