"""Change between each person's first and latest TOP reading and Outcome Star reading, per
item or area, across the cohort, with small numbers suppressed.

TOP readings are QuestionnaireResponses of the TOP Questionnaire; Outcome Star readings
are the Observations derived from the readings (one per area, 1-10), from reviews and from
third-sector key work alike. A person counts for an item when two readings on different
days answer it. Counts from 1 to 4 are shown as ``<5`` and the means of fewer than five
people are not shown, so that no one can be picked out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.pathway import codes
from gateway.reporting.records import day, scan
from gateway.store.repository import Repository
from mappings.top import read_top, top_form

SMALL = 5
SUPPRESSED = "<5"

Readings = dict[str, dict[str, list[tuple[date, float]]]]  # item -> patient -> (day, value)


def shown(count: int) -> int | str:
    """A count as it may be shown: 1-4 become ``<5``."""
    return SUPPRESSED if 0 < count < SMALL else count


def _add(readings: Readings, item: str, patient: str, when: date, value: float) -> None:
    readings.setdefault(item, {}).setdefault(patient, []).append((when, value))


def collect_top(repo: Repository) -> Readings:
    """TOP item -> person -> readings; responses that cannot be read are left out."""
    readings: Readings = {}
    url = top_form().url
    for stored, response in scan(repo, "QuestionnaireResponse"):
        when = day(response.get("authored"))
        if response.get("questionnaire") != url or not stored.patient or when is None:
            continue
        try:
            _, values = read_top(response)
        except ValueError:
            continue
        for item, value in values.items():
            _add(readings, item, stored.patient, when, float(value))
    return readings


def collect_star(repo: Repository) -> Readings:
    """Outcome Star area -> person -> readings."""
    readings: Readings = {}
    for stored, observation in scan(repo, "Observation"):
        area = codes.code_of(observation.get("code"), codes.OUTCOME_STAR_SYSTEM)
        when = day(observation.get("effectiveDateTime"))
        value = observation.get("valueInteger")
        if area and stored.patient and when is not None and isinstance(value, int) and observation.get("status") != "entered-in-error":
            _add(readings, area, stored.patient, when, float(value))
    return readings


@dataclass(frozen=True)
class ChangeRow:
    measure: str  # top | outcome-star
    item: str
    better: str
    people: int
    first_mean: float | None
    latest_mean: float | None
    improved: int
    unchanged: int
    worse: int

    @property
    def mean_change(self) -> float | None:
        return None if self.first_mean is None or self.latest_mean is None else round(self.latest_mean - self.first_mean, 2)

    def csv_row(self) -> dict[str, Any]:
        """The row as published: small counts suppressed, means only from five people up."""
        disclosed = self.people >= SMALL
        def mean(value: float | None) -> Any:
            return f"{value:g}" if disclosed and value is not None else ""
        return {"measure": self.measure, "item": self.item, "better": self.better, "people": shown(self.people),
                "first_mean": mean(self.first_mean), "latest_mean": mean(self.latest_mean), "mean_change": mean(self.mean_change),
                "improved": shown(self.improved), "unchanged": shown(self.unchanged), "worse": shown(self.worse)}


def change_rows(measure: str, readings: Readings, items: list[tuple[str, str]]) -> list[ChangeRow]:
    """One row per (item, better) in ``items``: first against latest reading per person."""
    rows = []
    for item, better in items:
        pairs = []
        for series in readings.get(item, {}).values():
            series = sorted(series)
            if series[-1][0] > series[0][0]:
                pairs.append((series[0][1], series[-1][1]))
        sign = 1 if better == "higher" else -1
        improved = sum(1 for a, b in pairs if (b - a) * sign > 0)
        unchanged = sum(1 for a, b in pairs if a == b)
        rows.append(ChangeRow(
            measure, item, better, len(pairs),
            round(statistics.fmean(a for a, _ in pairs), 2) if pairs else None,
            round(statistics.fmean(b for _, b in pairs), 2) if pairs else None,
            improved, unchanged, len(pairs) - improved - unchanged,
        ))
    return rows


def outcomes_report(repo: Repository) -> list[ChangeRow]:
    """TOP items then Outcome Star areas."""
    top = [(i.id, i.better) for i in top_form().items]
    star = [(area, "higher") for area in codes.OUTCOME_STAR_AREAS]
    return change_rows("top", collect_top(repo), top) + change_rows("outcome-star", collect_star(repo), star)


OUTCOME_COLUMNS = tuple(ChangeRow("", "", "", 0, None, None, 0, 0, 0).csv_row())
