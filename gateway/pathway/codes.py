"""The pathway's code systems, questionnaire URLs and extension URLs (DESIGN §3, §4, §7)."""

from __future__ import annotations

from typing import Any

from mappings.identifiers import EXTENSION_BASE

STAGE_SYSTEM = "https://pathway.scot/CodeSystem/stage"
STAGE_EXTENSION = EXTENSION_BASE + "pathway-stage"
REQUEST_CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/request-category"
TASK_REASON_SYSTEM = "https://pathway.scot/CodeSystem/task-reason"
TASK_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/task-type"
EPISODE_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/episode-type"
COMMUNICATION_CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/communication-category"
CARE_TEAM_ROLE_SYSTEM = "https://pathway.scot/CodeSystem/care-team-role"
HANDOVER_SYSTEM = "https://pathway.scot/CodeSystem/handover-support"
OUTCOME_STAR_SYSTEM = "https://pathway.scot/CodeSystem/outcome-star-area"
ENCOUNTER_CLASS_SYSTEM = "https://pathway.scot/CodeSystem/encounter-class"

RESOURCE_ALLOCATION = "https://pathway.scot/Questionnaire/resource-allocation"
OUTCOME_STAR = "https://pathway.scot/Questionnaire/outcome-star"

# ServiceRequest.category codes
REHAB_REFERRAL = "rehab-referral"
FACILITY_REFERRAL = "facility-referral"
COMMUNITY_REFERRAL = "community-referral"
# Task.code codes: which workflow a Task belongs to
PATHWAY_TASK = "rehab-pathway"
FACILITY_TASK = "facility-referral"
COMMUNITY_TASK = "community-referral"
HANDOVER_TASK = "handover"
# Task.statusReason codes
EARLY_EXIT = "early-exit"
# Communication.category codes
CONTINGENCY_ALERT = "contingency-alert"
REVIEW_SUMMARY = "review-summary"
REVIEW_OVERDUE = "review-overdue"
# CareTeam participant roles in the person's plan
KEY_WORKER = "key-worker"
COMMUNITY_TEAM = "community-team"
ADVOCATE = "advocate"

OUTCOME_STAR_AREAS = (
    "drug-use",
    "alcohol-use",
    "physical-health",
    "meaningful-use-of-time",
    "community",
    "emotional-health",
    "accommodation",
    "money",
    "offending",
    "family-relationships",
)
HANDOVER_SUPPORTS = ("counselling", "housing", "carers-support", "employability")
# Resource allocation criteria recorded with the decision (DESIGN §1).
ALLOCATION_CRITERIA = ("readiness", "commitment", "preparation", "current-use", "risks", "family", "justice")


def coding(system: str, code: str) -> dict[str, Any]:
    return {"system": system, "code": code}


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [coding(system, code)]}


def has_code(element: Any, system: str, code: str | None = None) -> bool:
    """Whether a CodeableConcept (or list of them) carries a coding of ``system`` (and ``code``)."""
    concepts = element if isinstance(element, list) else [element] if element else []
    return any(
        c.get("system") == system and (code is None or c.get("code") == code)
        for concept_ in concepts
        if isinstance(concept_, dict)
        for c in concept_.get("coding", [])
    )


def code_of(element: Any, system: str) -> str | None:
    """The code of ``system`` in a CodeableConcept (or the first of a list), if any."""
    concepts = element if isinstance(element, list) else [element] if element else []
    for concept_ in concepts:
        for c in concept_.get("coding", []) if isinstance(concept_, dict) else []:
            if c.get("system") == system and c.get("code"):
                return str(c["code"])
    return None

# What a referral carries beyond the core ServiceRequest elements (DESIGN §5.2 "referral").
SUBSTANCE_SYSTEM = "https://pathway.scot/CodeSystem/substance"
PLAN_ACTIVITY_SYSTEM = "https://pathway.scot/CodeSystem/plan-activity"
PREFERRED_FACILITY = EXTENSION_BASE + "preferred-facility"  # valueReference Organization
DETOX_REQUIRED = EXTENSION_BASE + "detox-required"  # valueBoolean
GOAL = EXTENSION_BASE + "goal"  # valueString
CONTINGENCY_PLAN = EXTENSION_BASE + "contingency-plan"  # valueString
KEY_WORKER_EXTENSION = EXTENSION_BASE + "key-worker"  # valueReference Organization | PractitionerRole


def extension_values(resource: dict[str, Any], url: str, value_key: str) -> list[Any]:
    return [e[value_key] for e in resource.get("extension", []) if e.get("url") == url and value_key in e]
