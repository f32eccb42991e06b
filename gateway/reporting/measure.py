"""The reports as FHIR: ``Measure`` definitions and ``MeasureReport`` summaries (type
``summary``: counts only, never a list of people), validated like everything that leaves."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gateway.fhir.validation import validate_resource
from gateway.reporting.mat import MatRow
from gateway.reporting.quarters import Quarter
from gateway.reporting.waits import ALL, STANDARD_DAYS, TARGET, WaitsRow

MEASURE_BASE = "https://pathway.scot/Measure/"
WAITS = "treatment-waiting-times"
MAT1 = "mat-1"
MEASURES = (WAITS, MAT1)
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
GROUP_SYSTEM = "https://pathway.scot/CodeSystem/measure-group"
STRATIFIER_SYSTEM = "https://pathway.scot/CodeSystem/measure-stratifier"
SERVICE_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/service-type"
SUBSTANCE_GROUP_SYSTEM = "https://pathway.scot/CodeSystem/substance-group"


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]}


def _population(code: str, description: str | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {"code": _concept(POPULATION_SYSTEM, code)}
    if description:
        base["description"] = description
        base["criteria"] = {"language": "text/plain", "expression": description}
    return base


def _measure(name: str, title: str, description: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    resource = {
        "resourceType": "Measure",
        "id": name,
        "url": MEASURE_BASE + name,
        "name": "".join(part.capitalize() for part in name.split("-")),
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": "Pathway",
        "description": description,
        "scoring": _concept("http://terminology.hl7.org/CodeSystem/measure-scoring", "proportion"),
        "improvementNotation": _concept("http://terminology.hl7.org/CodeSystem/measure-improvement-notation", "increase"),
        "group": groups,
    }
    return validate_resource(resource, "Measure")


def waits_measure() -> dict[str, Any]:
    """The waiting-times Measure: completed waits within three weeks (the standard is 90 %),
    and ongoing waits at the quarter's end, by service type and substance."""
    stratifiers = [
        {"code": _concept(STRATIFIER_SYSTEM, "service-type"), "criteria": {"language": "text/plain", "expression": "community | prison | residential"}},
        {"code": _concept(STRATIFIER_SYSTEM, "substance"), "criteria": {"language": "text/plain", "expression": "drugs | alcohol | both"}},
    ]
    groups = [
        {
            "code": _concept(GROUP_SYSTEM, "completed", "Completed waits"),
            "description": f"Referrals whose first treatment started in the period; numerator: waited {STANDARD_DAYS} days or less (standard {TARGET:.0%})",
            "population": [
                _population("initial-population", "rehab referrals whose treatment started in the period"),
                _population("denominator", "the same referrals"),
                _population("numerator", f"of those, adjusted wait of {STANDARD_DAYS} days or less"),
            ],
            "stratifier": stratifiers,
        },
        {
            "code": _concept(GROUP_SYSTEM, "ongoing", "Ongoing waits"),
            "description": "Referrals still waiting at the period's end; numerator: waited three weeks or less so far",
            "population": [
                _population("initial-population", "rehab referrals received by the period's end, not started nor closed by then"),
                _population("denominator", "the same referrals"),
                _population("numerator", f"of those, adjusted wait so far of {STANDARD_DAYS} days or less"),
            ],
            "stratifier": stratifiers,
        },
    ]
    return _measure(
        WAITS, "Drug and alcohol treatment waiting times",
        "Referral received to first treatment or intervention, with documented clock adjustments (docs/reporting.md)", groups,
    )


def mat1_measure() -> dict[str, Any]:
    """MAT standard 1: OST started the same day as presentation."""
    group = {
        "code": _concept(GROUP_SYSTEM, "same-day-ost", "OST started the same day"),
        "population": [
            _population("initial-population", "people presenting (referred) in the period"),
            _population("denominator", "of those, people who started OST on or after presentation"),
            _population("numerator", "of those, OST started on the day of presentation"),
            _population("denominator-exclusion", "already on OST at presentation"),
        ],
    }
    return _measure(MAT1, "MAT standard 1: same-day access to OST", "Presentation to opioid substitution treatment start (docs/reporting.md)", [group])


def _count(code: str, count: int) -> dict[str, Any]:
    return {"code": _concept(POPULATION_SYSTEM, code), "count": count}


def _score(part: int, whole: int) -> dict[str, Any]:
    return {"measureScore": {"value": round(part / whole, 4), "unit": "1"}} if whole else {}


def _waits_populations(row: WaitsRow, kind: str) -> tuple[list[dict[str, Any]], int, int]:
    whole, part = (row.completed, row.completed_within) if kind == "completed" else (row.ongoing, row.ongoing_within)
    return [_count("initial-population", whole), _count("denominator", whole), _count("numerator", part)], part, whole


def _stratum(row: WaitsRow, kind: str, system: str, value: str) -> dict[str, Any]:
    populations, part, whole = _waits_populations(row, kind)
    return {"value": _concept(system, value), "population": populations, **_score(part, whole)}


def _report(measure: str, quarter: Quarter, reporter: dict[str, Any] | None, groups: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    resource = {
        "resourceType": "MeasureReport",
        "id": f"{measure}-{quarter}".lower(),
        "status": "complete",
        "type": "summary",
        "measure": MEASURE_BASE + measure,
        "date": now.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "period": {"start": quarter.start.isoformat(), "end": quarter.end.isoformat()},
        "improvementNotation": _concept("http://terminology.hl7.org/CodeSystem/measure-improvement-notation", "increase"),
        "group": groups,
    }
    if reporter:
        resource["reporter"] = reporter
    return validate_resource(resource, "MeasureReport")


def waits_measure_report(rows: list[WaitsRow], quarter: Quarter, reporter: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The quarter's waits (``waits_report`` rows) as a MeasureReport."""
    total = next(r for r in rows if r.service_type == ALL and r.substance == ALL)
    groups = []
    for kind in ("completed", "ongoing"):
        populations, part, whole = _waits_populations(total, kind)
        by_service = [_stratum(r, kind, SERVICE_TYPE_SYSTEM, r.service_type) for r in rows if r.substance == ALL and r.service_type != ALL]
        by_substance = [_stratum(r, kind, SUBSTANCE_GROUP_SYSTEM, r.substance) for r in rows if r.service_type == ALL and r.substance != ALL]
        groups.append({
            "code": _concept(GROUP_SYSTEM, kind),
            "population": populations,
            **_score(part, whole),
            "stratifier": [
                {"code": [_concept(STRATIFIER_SYSTEM, "service-type")], "stratum": by_service},
                {"code": [_concept(STRATIFIER_SYSTEM, "substance")], "stratum": by_substance},
            ],
        })
    return _report(WAITS, quarter, reporter, groups, now)


def mat1_measure_report(row: MatRow, quarter: Quarter, reporter: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    group = {
        "code": _concept(GROUP_SYSTEM, "same-day-ost"),
        "population": [
            _count("initial-population", row.presentations),
            _count("denominator", row.started),
            _count("numerator", row.started_same_day),
            _count("denominator-exclusion", row.already_on_ost),
        ],
        **_score(row.started_same_day, row.started),
    }
    return _report(MAT1, quarter, reporter, [group], now)
