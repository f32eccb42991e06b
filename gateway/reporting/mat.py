"""MAT standard 1 evidence: time from presentation to starting opioid substitution
treatment (OST), and the share started the same day.

Presentation is the day the rehab referral was received. OST prescriptions are the GP
extract's drug records (EMIS ``Prescribing_DrugRecord`` -> MedicationStatement, issues ->
MedicationRequest) whose medicine is methadone or buprenorphine (``mappings/codes/ost.yaml``).
A person whose OST started before the presentation and was still running is *already on
OST*; otherwise the first OST on or after the presentation is the start.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

import yaml

from gateway.reporting.quarters import Quarter
from gateway.reporting.records import Referral, day, scan
from gateway.store.repository import Repository
from mappings.codes import CODES_DIR

# Days from presentation to OST start: (label, upper bound inclusive).
START_BANDS = (("same day", 0), ("1–2 days", 2), ("3–7 days", 7), ("8–14 days", 14), ("15+ days", 10**6))


@lru_cache(maxsize=1)
def _ost_table() -> tuple[tuple[str, ...], frozenset[tuple[str, str]]]:
    document = yaml.safe_load((CODES_DIR / "ost.yaml").read_text(encoding="utf-8"))
    return tuple(w.lower() for w in document["substances"]), frozenset((c["system"], str(c["code"])) for c in document.get("codes") or [])


def is_ost(medication: dict[str, Any] | None) -> bool:
    """Whether a medicationCodeableConcept is an OST medicine."""
    if not medication:
        return False
    words, codes = _ost_table()
    texts = [medication.get("text", "")] + [c.get("display", "") for c in medication.get("coding", [])]
    if any(word in str(text).lower() for text in texts for word in words):
        return True
    return any((c.get("system"), str(c.get("code"))) in codes for c in medication.get("coding", []))


@dataclass(frozen=True)
class OstCourse:
    patient: str
    start: date
    end: date | None
    active: bool


def _course(resource: dict[str, Any], patient: str) -> OstCourse | None:
    if resource["resourceType"] == "MedicationRequest":
        start = day(resource.get("authoredOn"))
        return OstCourse(patient, start, start, False) if start else None
    period = resource.get("effectivePeriod") or {}
    start = day(resource.get("effectiveDateTime") or period.get("start"))
    if start is None:
        return None
    return OstCourse(patient, start, day(period.get("end")), resource.get("status") in ("active", "intended", "on-hold"))


def collect_ost(repo: Repository) -> dict[str, list[OstCourse]]:
    """Every person's OST prescriptions (courses and issues), earliest first."""
    courses: dict[str, list[OstCourse]] = {}
    for resource_type in ("MedicationStatement", "MedicationRequest"):
        for stored, resource in scan(repo, resource_type):
            if stored.patient and resource.get("status") != "entered-in-error" and is_ost(resource.get("medicationCodeableConcept")):
                if (course := _course(resource, stored.patient)) is not None:
                    courses.setdefault(stored.patient, []).append(course)
    for found in courses.values():
        found.sort(key=lambda c: c.start)
    return courses


@dataclass(frozen=True)
class Presentation:
    referral: Referral
    already_on_ost: bool
    ost_start: date | None

    @property
    def days(self) -> int | None:
        if self.ost_start is None or self.referral.received is None:
            return None
        return (self.ost_start - self.referral.received).days


def presentation(referral: Referral, courses: list[OstCourse]) -> Presentation:
    presented = referral.received
    assert presented is not None
    running = any(c.start < presented and (c.end is None and c.active or c.end is not None and c.end >= presented) for c in courses)
    started = next((c.start for c in courses if c.start >= presented), None)
    return Presentation(referral, running, None if running else started)


@dataclass(frozen=True)
class MatRow:
    quarter: str
    presentations: int
    already_on_ost: int
    started: int
    started_same_day: int
    share_same_day: float | None
    median_days: float | None
    bands: tuple[tuple[str, int], ...]

    def csv_row(self) -> dict[str, Any]:
        return {
            "quarter": self.quarter,
            "presentations": self.presentations,
            "already_on_ost": self.already_on_ost,
            "started_ost": self.started,
            "started_same_day": self.started_same_day,
            "percent_same_day": "" if self.share_same_day is None else f"{self.share_same_day * 100:.1f}",
            "median_days_to_ost": "" if self.median_days is None else f"{self.median_days:g}",
            **{f"days_{label.replace(' ', '_').replace('–', '_to_').replace('+', '_plus')}": n for label, n in self.bands},
        }


def mat1_report(referrals: Iterable[Referral], courses: dict[str, list[OstCourse]], quarter: Quarter) -> MatRow:
    """MAT 1 for the people who presented (were referred) in ``quarter``."""
    found = [presentation(r, courses.get(r.patient or "", [])) for r in referrals if r.received in quarter]
    days = [p.days for p in found if p.days is not None]
    same_day = sum(1 for d in days if d == 0)
    bands = tuple((label, sum(1 for d in days if d <= upper and (i == 0 or d > START_BANDS[i - 1][1]))) for i, (label, upper) in enumerate(START_BANDS))
    return MatRow(
        str(quarter), len(found), sum(1 for p in found if p.already_on_ost), len(days), same_day,
        round(same_day / len(days), 4) if days else None, statistics.median(days) if days else None, bands,
    )


MAT_COLUMNS = tuple(MatRow("", 0, 0, 0, 0, None, None, tuple((label, 0) for label, _ in START_BANDS)).csv_row())
