"""The referrals the reports count, read from the stored FHIR resources in one pass per type.

A referral is a rehab-referral ServiceRequest with its pathway Task, the resource
allocation decision (QuestionnaireResponse), the facility stay (facility Task) and the
person's Patient record. Nothing is copied aside: every report reads these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from gateway.pathway import codes
from gateway.pathway.clock import CLOCK_ADJUSTMENT, DID_NOT_ATTEND, UNAVAILABLE
from gateway.pathway.moves import decision_of, stage_of
from gateway.store.repository import Repository
from mappings.identifiers import CHI_SYSTEM, REFERRAL_SYSTEM

SERVICE_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/service-type"
SERVICE_TYPES = ("community", "prison", "residential")
SCAN_BATCH = 5000
SUBSTANCE = codes.SUBSTANCE_SYSTEM


def day(value: Any) -> date | None:
    """The date part of a FHIR date or dateTime, None when absent or unreadable."""
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Row:
    """A stored resource as a report reads it: its reference and the person it is about."""

    reference: str
    patient: str | None


def scan(repo: Repository, resource_type: str) -> Iterator[tuple[Row, dict[str, Any]]]:
    """Every current resource of a type with its parsed body, streamed."""
    loads = orjson.loads
    for resource_id, patient, raw in repo.bodies(resource_type, SCAN_BATCH):
        yield Row(f"{resource_type}/{resource_id}", patient), loads(raw)


@dataclass(frozen=True)
class ClockAdjustment:
    """A documented adjustment: the person was unavailable over ``start``..``end`` (those days
    do not count), or did not attend on ``start`` (the clock starts again from that day)."""

    reason: str
    start: date
    end: date | None = None


@dataclass
class Referral:
    """One referral as the reports need it."""

    reference: str
    referral_id: str
    patient: str | None
    received: date | None
    has_source: bool
    substances: frozenset[str]
    setting: str | None
    service: str
    stage: str = "referral"
    task_status: str = "requested"
    closed_on: date | None = None
    decided: date | None = None
    decision: str | None = None
    admitted: date | None = None
    facility: str | None = None
    adjustments: tuple[ClockAdjustment, ...] = ()
    has_chi: bool = False  # set by mark_chi


def clock_adjustments(task: dict[str, Any]) -> tuple[ClockAdjustment, ...]:
    """The clock-adjustment extensions on a pathway Task (unreadable ones are ignored here
    and reported by the completeness check)."""
    found = []
    for extension in task.get("extension", []):
        if extension.get("url") != CLOCK_ADJUSTMENT:
            continue
        parts = {e.get("url"): e for e in extension.get("extension", [])}
        reason = (parts.get("reason", {}).get("valueCoding") or {}).get("code")
        period = parts.get("period", {}).get("valuePeriod") or {}
        start = day(period.get("start"))
        if reason in (UNAVAILABLE, DID_NOT_ATTEND) and start is not None:
            found.append(ClockAdjustment(reason, start, day(period.get("end"))))
    return tuple(found)


def _referral(stored: Row, resource: dict[str, Any]) -> Referral:
    substances = frozenset(
        str(c["code"]) for concept in resource.get("reasonCode", ()) for c in concept.get("coding", ()) if c.get("system") == SUBSTANCE and c.get("code")
    )
    business_id = next((i.get("value") for i in resource.get("identifier", []) if i.get("system") == REFERRAL_SYSTEM), None)
    return Referral(
        reference=stored.reference,
        referral_id=str(business_id or stored.reference.split("/", 1)[1]),
        patient=stored.patient,
        received=day(resource.get("authoredOn")),
        has_source=bool(resource.get("requester")),
        substances=substances,
        setting=codes.code_of(resource.get("locationCode"), SERVICE_TYPE_SYSTEM),
        service="",
    )


def collect_referrals(repo: Repository) -> list[Referral]:
    """Every rehab referral with its pathway, decision and stay (``mark_chi`` adds whether
    the person has a CHI, which only the completeness report needs)."""
    referrals: dict[str, Referral] = {}
    for stored, resource in scan(repo, "ServiceRequest"):
        if codes.code_of(resource.get("category"), codes.REQUEST_CATEGORY_SYSTEM) == codes.REHAB_REFERRAL:
            referrals[stored.reference] = _referral(stored, resource)
    by_task: dict[str, Referral] = {}
    stays: list[dict[str, Any]] = []
    for stored, task in scan(repo, "Task"):
        kind = codes.code_of(task.get("code"), codes.TASK_TYPE_SYSTEM)
        if kind == codes.FACILITY_TASK:
            stays.append(task)
            continue
        referral = referrals.get((task.get("focus") or {}).get("reference", "")) if kind == codes.PATHWAY_TASK else None
        if referral is None:
            continue
        referral.service = (task.get("owner") or {}).get("reference", "")
        referral.stage = stage_of(task) or "referral"
        referral.task_status = str(task.get("status", ""))
        if referral.stage == "closed" or referral.task_status in ("cancelled", "rejected", "entered-in-error", "completed", "failed"):
            referral.closed_on = day(task.get("lastModified") or task.get("authoredOn"))
        referral.adjustments = clock_adjustments(task)
        by_task[stored.reference] = referral
    for task in stays:
        referral = by_task.get(((task.get("partOf") or [{}])[0]).get("reference", ""))
        start = day((task.get("executionPeriod") or {}).get("start"))
        if referral is not None and start is not None and task.get("status") in ("in-progress", "on-hold", "completed", "failed"):
            referral.admitted = start
            referral.facility = (task.get("owner") or {}).get("reference")
    for _, response in scan(repo, "QuestionnaireResponse"):
        if response.get("questionnaire") != codes.RESOURCE_ALLOCATION:
            continue
        for based_on in response.get("basedOn", []):
            referral = referrals.get(based_on.get("reference", ""))
            authored = day(response.get("authored"))
            if referral is not None and authored is not None and (referral.decided is None or authored < referral.decided):
                referral.decided, referral.decision = authored, decision_of(response)
    return list(referrals.values())


def mark_chi(repo: Repository, referrals: list[Referral]) -> None:
    """Set ``has_chi`` on each referral from its person's Patient record."""
    with_chi = {
        stored.reference
        for stored, patient in scan(repo, "Patient")
        if any(i.get("system") == CHI_SYSTEM and i.get("value") for i in patient.get("identifier", []))
    }
    for referral in referrals:
        referral.has_chi = referral.patient in with_chi
