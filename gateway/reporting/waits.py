"""Drug and alcohol treatment waiting times against the national standard (90 % of people
wait no more than three weeks from referral to appropriate treatment).

The clock runs from the day the referral was received (ServiceRequest.authoredOn) to the
first treatment or intervention: the resource allocation decision (assessment support or
the community pathway begins) or the admission to a facility, whichever comes first.
Documented adjustments on the pathway Task (extension ``clock-adjustment``):
``did-not-attend`` restarts the clock from the missed appointment, ``unavailable`` takes the
days the person was unavailable out of the wait.

Per quarter: *completed waits* are referrals whose treatment started in the quarter;
*ongoing waits* are referrals received by the quarter's last day and not started (nor
closed) by then, their wait measured to that day. Referrals past the decision with no
treatment date are left out of both and listed by the completeness report.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.pathway.clock import DID_NOT_ATTEND, UNAVAILABLE
from gateway.reporting.quarters import Quarter
from gateway.reporting.records import SERVICE_TYPES, Referral

STANDARD_DAYS = 21
TARGET = 0.9
SUBSTANCE_GROUPS = ("drugs", "alcohol", "both")
ALL = "all"
# Ongoing waits by weeks waited: (label, upper bound in days, inclusive).
ONGOING_BANDS = (("0–3 wk", 21), ("3–6 wk", 42), ("6–12 wk", 84), ("12+ wk", 10**6))
# Stages a pathway reaches only after treatment started (the decision, or admission).
TREATED_STAGES = frozenset({"assessment", "preparation", "residential", "community-recovery", "alternative-pathway"})


def treatment_start(referral: Referral) -> date | None:
    """The first treatment or intervention: the allocation decision or the admission."""
    decided, admitted = referral.decided, referral.admitted
    if decided is None or admitted is None:
        return decided or admitted
    return min(decided, admitted)


def missing_treatment_start(referral: Referral) -> bool:
    """Past the point where treatment has started, with no date to show when."""
    return treatment_start(referral) is None and referral.stage in TREATED_STAGES


def substance_group(referral: Referral) -> str | None:
    """drugs, alcohol or both from the referral's substance codes; None when none recorded."""
    if not referral.substances:
        return None
    alcohol = "alcohol" in referral.substances
    drugs = bool(referral.substances - {"alcohol"})
    return "both" if alcohol and drugs else "alcohol" if alcohol else "drugs"


def service_type(referral: Referral) -> str:
    """community, prison or residential: as the referral states it (locationCode), else
    residential when the pathway goes to a facility, else community."""
    if referral.setting in SERVICE_TYPES:
        return str(referral.setting)
    return "residential" if referral.admitted is not None or referral.decision == "yes" else "community"


def waited_days(referral: Referral, until: date) -> int:
    """Days from the referral (or the last missed appointment) to ``until``, less the days
    the person was unavailable in between."""
    assert referral.received is not None
    clock = max([referral.received] + [a.start for a in referral.adjustments if a.reason == DID_NOT_ATTEND and a.start <= until])
    away = 0
    for adjustment in referral.adjustments:
        if adjustment.reason == UNAVAILABLE:
            first, last = max(adjustment.start, clock), min(adjustment.end or until, until)
            away += max((last - first).days + 1, 0)
    return max((until - clock).days - away, 0)


@dataclass(frozen=True)
class Wait:
    referral: Referral
    kind: str  # completed | ongoing
    days: int
    service_type: str
    substance: str | None


def quarter_waits(referrals: Iterable[Referral], quarter: Quarter, today: date | None = None) -> list[Wait]:
    """The completed and ongoing waits of a quarter; for the quarter under way, ongoing
    waits are measured to ``today``."""
    first, until = quarter.start, min(quarter.end, today or quarter.end)
    waits = []
    for referral in referrals:
        if referral.received is None or referral.received > until or missing_treatment_start(referral):
            continue
        started = treatment_start(referral)
        kind = service_type(referral)
        if started is not None and first <= started <= until:
            waits.append(Wait(referral, "completed", waited_days(referral, started), kind, substance_group(referral)))
        elif (started is None or started > until) and not (started is None and referral.closed_on and referral.closed_on <= until):
            waits.append(Wait(referral, "ongoing", waited_days(referral, until), kind, substance_group(referral)))
    return waits


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percent(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}"


@dataclass(frozen=True)
class WaitsRow:
    """One line of the waits report: a quarter, a service type and a substance group."""

    quarter: str
    service_type: str
    substance: str
    completed: int
    completed_within: int
    completed_share: float | None
    completed_median_days: float | None
    ongoing: int
    ongoing_within: int
    ongoing_over: int
    ongoing_share: float | None

    @property
    def met(self) -> bool | None:
        return None if self.completed_share is None else self.completed_share >= TARGET

    def csv_row(self) -> dict[str, Any]:
        return {
            "quarter": self.quarter,
            "service_type": self.service_type,
            "substance": self.substance,
            "completed_waits": self.completed,
            "completed_within_3_weeks": self.completed_within,
            "completed_percent_within_3_weeks": _percent(self.completed_share),
            "completed_median_days": "" if self.completed_median_days is None else f"{self.completed_median_days:g}",
            "ongoing_waits": self.ongoing,
            "ongoing_within_3_weeks": self.ongoing_within,
            "ongoing_over_3_weeks": self.ongoing_over,
            "standard_percent": _percent(TARGET),
            "standard_met": "" if self.met is None else "yes" if self.met else "no",
        }


WAITS_COLUMNS = tuple(WaitsRow("", "", "", 0, 0, None, None, 0, 0, 0, None).csv_row())


def _row(quarter: Quarter, kind: str, substance: str, waits: list[Wait]) -> WaitsRow:
    completed = [w.days for w in waits if w.kind == "completed"]
    ongoing = [w.days for w in waits if w.kind == "ongoing"]
    within = sum(1 for d in completed if d <= STANDARD_DAYS)
    ongoing_within = sum(1 for d in ongoing if d <= STANDARD_DAYS)
    return WaitsRow(
        str(quarter), kind, substance, len(completed), within, _share(within, len(completed)),
        statistics.median(completed) if completed else None,
        len(ongoing), ongoing_within, len(ongoing) - ongoing_within, _share(ongoing_within, len(ongoing)),
    )


def waits_report(referrals: Iterable[Referral], quarter: Quarter, today: date | None = None) -> list[WaitsRow]:
    """The quarter's rows: the total, each substance group over all service types, each
    service type over all substances and by substance group (a wait with no substance
    recorded counts in the ``all`` rows only)."""
    waits = quarter_waits(referrals, quarter, today)
    rows = [_row(quarter, ALL, ALL, waits)]
    rows += [_row(quarter, ALL, group, [w for w in waits if w.substance == group]) for group in SUBSTANCE_GROUPS]
    for kind in SERVICE_TYPES:
        of_kind = [w for w in waits if w.service_type == kind]
        rows.append(_row(quarter, kind, ALL, of_kind))
        rows += [_row(quarter, kind, group, [w for w in of_kind if w.substance == group]) for group in SUBSTANCE_GROUPS]
    return rows


def ongoing_bands(waits: Iterable[Wait]) -> list[tuple[str, int]]:
    """Ongoing waits by weeks waited (PHS's bands), for the dashboard chart."""
    counts = dict.fromkeys((label for label, _ in ONGOING_BANDS), 0)
    for wait in waits:
        if wait.kind == "ongoing":
            counts[next(label for label, upper in ONGOING_BANDS if wait.days <= upper)] += 1
    return list(counts.items())


def recent_quarters(today: date, count: int = 4) -> list[Quarter]:
    """The ``count`` quarters up to the one containing ``today``, oldest first."""
    quarters = [Quarter.containing(today)]
    while len(quarters) < count:
        quarters.append(quarters[-1].previous())
    return quarters[::-1]


def quarter_before(today: date) -> Quarter:
    """The last complete quarter: the one reported on by default."""
    return Quarter.containing(today).previous()
