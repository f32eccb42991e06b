"""Waiting-time clock adjustments on the pathway Task (extension ``clock-adjustment``): only
the service that owns the referral documents them, and each must be readable, since the
waiting-times return counts them (docs/reporting.md)."""

from __future__ import annotations

from datetime import date
from typing import Any

from gateway.fhir.outcomes import FhirError
from gateway.pathway import stages
from gateway.pathway.context import PathwayContext
from gateway.pathway.moves import parties, refuse
from mappings.identifiers import EXTENSION_BASE

CLOCK_ADJUSTMENT = EXTENSION_BASE + "clock-adjustment"
CLOCK_ADJUSTMENT_SYSTEM = "https://pathway.scot/CodeSystem/clock-adjustment"
UNAVAILABLE, DID_NOT_ATTEND = "unavailable", "did-not-attend"


def _adjustments(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in task.get("extension", []) if e.get("url") == CLOCK_ADJUSTMENT]


def _problem(adjustment: dict[str, Any]) -> str | None:
    parts = {e.get("url"): e for e in adjustment.get("extension", [])}
    reason = parts.get("reason", {}).get("valueCoding") or {}
    if reason.get("system") != CLOCK_ADJUSTMENT_SYSTEM or reason.get("code") not in (UNAVAILABLE, DID_NOT_ATTEND):
        return f"a clock adjustment needs reason = valueCoding {CLOCK_ADJUSTMENT_SYSTEM}|{UNAVAILABLE} or |{DID_NOT_ATTEND}"
    period = parts.get("period", {}).get("valuePeriod") or {}
    try:
        start = date.fromisoformat(str(period.get("start", ""))[:10])
        end = date.fromisoformat(str(period["end"])[:10]) if period.get("end") else None
    except ValueError:
        return "a clock adjustment needs period = valuePeriod with a start date (and, when unavailable, an end date)"
    if reason["code"] == UNAVAILABLE and (end is None or end < start):
        return "an unavailable period needs an end date on or after its start"
    return None


def check_clock_adjustments(pc: PathwayContext, task: dict[str, Any], before: dict[str, Any]) -> None:
    """Refuse a change to a pathway Task's clock adjustments by anyone but its owner, or one
    that cannot be read."""
    if _adjustments(task) == _adjustments(before):
        return
    if stages.Party.OWNER not in parties(pc, before):
        raise refuse(403, "waiting-time clock adjustments are documented by the service that owns the referral", "Task.extension")
    for adjustment in _adjustments(task):
        if (problem := _problem(adjustment)) is not None:
            raise FhirError(422, problem, "value", "Task.extension")
