"""The reports read once from the store, and each figure as CSV (what the CLI prints and
the console offers for download)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.reporting.completeness import COMPLETENESS_COLUMNS, CompletenessReport, completeness_report
from gateway.reporting.mat import MAT_COLUMNS, MatRow, OstCourse, collect_ost, mat1_report
from gateway.reporting.outcomes import OUTCOME_COLUMNS, outcomes_report
from gateway.reporting.quarters import Quarter
from gateway.reporting.records import Referral, collect_referrals, mark_chi
from gateway.reporting.waits import WAITS_COLUMNS, WaitsRow, waits_report
from gateway.store.repository import Repository, now_utc

FIGURES = ("waits", "completeness", "mat1", "outcomes")


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """RFC 4180 CSV with a header row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@dataclass
class Reports:
    """The stored referrals, read once; the people's records and the prescriptions are read
    only when a report needs them. Use within the session ``repo`` belongs to."""

    repo: Repository
    referrals: list[Referral]
    today: date
    _courses: dict[str, list[OstCourse]] | None = None
    _chi_marked: bool = False

    @classmethod
    def load(cls, repo: Repository, today: date | None = None) -> "Reports":
        return cls(repo, collect_referrals(repo), today or now_utc().date())

    def waits(self, quarter: Quarter) -> list[WaitsRow]:
        return waits_report(self.referrals, quarter, self.today)

    def completeness(self, quarter: Quarter) -> CompletenessReport:
        if not self._chi_marked:
            mark_chi(self.repo, self.referrals)
            self._chi_marked = True
        return completeness_report(self.referrals, quarter)

    def mat1(self, quarter: Quarter) -> MatRow:
        if self._courses is None:
            self._courses = collect_ost(self.repo)
        return mat1_report(self.referrals, self._courses, quarter)


def figure_csv(name: str, repo: Repository, quarters: Sequence[Quarter]) -> str:
    """One figure as CSV over ``quarters`` (the outcomes figure covers the whole cohort)."""
    if name == "outcomes":
        return to_csv(OUTCOME_COLUMNS, (row.csv_row() for row in outcomes_report(repo)))
    reports = Reports.load(repo)
    if name == "waits":
        return to_csv(WAITS_COLUMNS, (row.csv_row() for q in quarters for row in reports.waits(q)))
    if name == "completeness":
        return to_csv(COMPLETENESS_COLUMNS, (o.csv_row(q) for q in quarters for o in reports.completeness(q).organisations))
    if name == "mat1":
        return to_csv(MAT_COLUMNS, (reports.mat1(q).csv_row() for q in quarters))
    raise ValueError(f"no figure {name!r}; the figures are {', '.join(FIGURES)}")
