"""The pathway's rules as tables: the FHIR Task state machine, the stage graph, and
who may make which move. Pure data and functions; the workflow hook applies them.

Each ``*_problem`` function returns why a move is not allowed, or None when it is.
"""

from __future__ import annotations

from enum import Enum

# FHIR Task status state machine as Pathway enforces it (DESIGN §4).
TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled"}),
    "accepted": frozenset({"ready", "in-progress", "cancelled"}),
    "ready": frozenset({"in-progress", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"in-progress", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "rejected": frozenset(),
    "entered-in-error": frozenset(),
}
TASK_STATUSES = frozenset(TASK_TRANSITIONS)
ANY_TO = "entered-in-error"


class Party(str, Enum):
    """Who a caller is in relation to a Task."""

    OWNER = "owner"
    REQUESTER = "requester"


# Who may move a Task into each status (a status absent here may be set by either).
STATUS_ACTORS: dict[str, frozenset[Party]] = {
    "received": frozenset({Party.OWNER}),
    "accepted": frozenset({Party.OWNER}),
    "rejected": frozenset({Party.OWNER}),
    "ready": frozenset({Party.OWNER}),
    "in-progress": frozenset({Party.OWNER}),
    "on-hold": frozenset({Party.OWNER}),
    "completed": frozenset({Party.OWNER}),
    "failed": frozenset({Party.OWNER}),
    "cancelled": frozenset({Party.REQUESTER}),
    "requested": frozenset({Party.REQUESTER}),
    "entered-in-error": frozenset({Party.OWNER, Party.REQUESTER}),
}

STAGES = (
    "referral",
    "initial-meeting",
    "resource-allocation",
    "alternative-pathway",
    "assessment",
    "preparation",
    "residential",
    "community-recovery",
    "closed",
)
# The stage graph: which stage may follow which.
STAGE_NEXT: dict[str, frozenset[str]] = {
    "referral": frozenset({"initial-meeting"}),
    "initial-meeting": frozenset({"resource-allocation"}),
    "resource-allocation": frozenset({"assessment", "alternative-pathway"}),
    "alternative-pathway": frozenset({"closed"}),
    "assessment": frozenset({"preparation"}),
    "preparation": frozenset({"residential"}),
    "residential": frozenset({"community-recovery"}),
    "community-recovery": frozenset({"closed"}),
    "closed": frozenset(),
}
# The Task statuses each stage runs in (DESIGN §7 step 2).
STAGE_STATUSES: dict[str, frozenset[str]] = {
    "referral": frozenset({"requested", "received"}),
    "initial-meeting": frozenset({"accepted"}),
    "resource-allocation": frozenset({"in-progress", "on-hold"}),
    "alternative-pathway": frozenset({"in-progress", "on-hold"}),
    "assessment": frozenset({"in-progress", "on-hold"}),
    "preparation": frozenset({"in-progress", "on-hold"}),
    "residential": frozenset({"in-progress", "on-hold"}),
    "community-recovery": frozenset({"in-progress", "on-hold"}),
    "closed": frozenset({"completed"}),
}
# Statuses that end a pathway at whatever stage it had reached.
ENDING_STATUSES = frozenset({"cancelled", "rejected", "entered-in-error", "failed"})
# The allocation decision each stage after resource-allocation needs.
DECISION_FOR_STAGE = {"assessment": "yes", "alternative-pathway": "no"}

# EpisodeOfCare.status kept in step with the pathway Task.
EPISODE_STATUS_FOR_STAGE = {stage: "active" for stage in STAGES} | {"referral": "planned", "closed": "finished"}
EPISODE_STATUS_FOR_ENDING = {"cancelled": "cancelled", "rejected": "cancelled", "entered-in-error": "entered-in-error", "failed": "finished"}


def status_move_problem(old: str, new: str) -> str | None:
    """Why the FHIR Task state machine forbids ``old`` -> ``new``, or None."""
    if new not in TASK_STATUSES:
        return f"{new!r} is not a Task status (one of: {', '.join(sorted(TASK_STATUSES))})"
    if old == new or new == ANY_TO:
        return None
    allowed = TASK_TRANSITIONS.get(old, frozenset())
    if new not in allowed:
        then = f"only to {', '.join(sorted(allowed))}" if allowed else "nowhere: it is final"
        return f"a Task cannot move from {old} to {new}; from {old} it may move {then}"
    return None


def status_actor_problem(old: str, new: str, parties: frozenset[Party]) -> str | None:
    """Why a caller holding ``parties`` on a Task may not move it from ``old`` to ``new``, or None."""
    if old == new:
        return None
    needed = STATUS_ACTORS.get(new, frozenset(Party))
    if parties & needed:
        return None
    who = " or ".join(sorted(p.value for p in needed))
    return f"only the Task's {who} may set its status to {new}"


def stage_move_problem(old: str, new: str) -> str | None:
    """Why the pathway stage graph forbids ``old`` -> ``new``, or None."""
    if new not in STAGE_NEXT:
        return f"{new!r} is not a pathway stage (one of: {', '.join(STAGES)})"
    if old == new:
        return None
    allowed = STAGE_NEXT.get(old, frozenset())
    if new not in allowed:
        then = f"only {' or '.join(sorted(allowed))}" if allowed else "nothing: the pathway is closed"
        return f"the pathway cannot move from {old} to {new}; after {old} comes {then}"
    return None


def stage_status_problem(stage: str, status: str) -> str | None:
    """Why a pathway Task may not have ``status`` at ``stage``, or None."""
    if status in ENDING_STATUSES or status in STAGE_STATUSES.get(stage, frozenset()):
        return None
    expected = " or ".join(sorted(STAGE_STATUSES.get(stage, frozenset())))
    return f"at stage {stage} the pathway Task's status must be {expected}, not {status}"


def decision_problem(stage: str, decision: str | None) -> str | None:
    """Why the resource allocation decision does not allow moving to ``stage``, or None."""
    needed = DECISION_FOR_STAGE.get(stage)
    if needed is None or decision == needed:
        return None
    if decision is None:
        return f"moving to {stage} needs the resource allocation decision first (a QuestionnaireResponse for the referral)"
    return f"the resource allocation decision was {decision!r}, so the pathway cannot move to {stage}"


def episode_status(stage: str, task_status: str) -> str:
    """The EpisodeOfCare status that matches a pathway Task's stage and status."""
    return EPISODE_STATUS_FOR_ENDING.get(task_status) or EPISODE_STATUS_FOR_STAGE[stage]
