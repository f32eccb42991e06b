"""The pathway's rule tables: the FHIR Task state machine, the stage graph and who may move what."""

from __future__ import annotations

import pytest

from gateway.pathway.stages import (
    STAGE_NEXT,
    STAGE_STATUSES,
    STAGES,
    TASK_TRANSITIONS,
    Party,
    decision_problem,
    episode_status,
    stage_move_problem,
    stage_status_problem,
    status_actor_problem,
    status_move_problem,
)

OWNER, REQUESTER = frozenset({Party.OWNER}), frozenset({Party.REQUESTER})

# DESIGN §4, written out once more by hand so a change to the table is caught.
DESIGN_MACHINE = {
    ("draft", "requested"), ("draft", "cancelled"),
    ("requested", "received"), ("requested", "accepted"), ("requested", "rejected"), ("requested", "cancelled"),
    ("received", "accepted"), ("received", "rejected"), ("received", "cancelled"),
    ("accepted", "ready"), ("accepted", "in-progress"), ("accepted", "cancelled"),
    ("ready", "in-progress"), ("ready", "cancelled"),
    ("in-progress", "on-hold"), ("in-progress", "completed"), ("in-progress", "failed"), ("in-progress", "cancelled"),
    ("on-hold", "in-progress"), ("on-hold", "failed"), ("on-hold", "cancelled"),
}  # fmt: skip


@pytest.mark.parametrize("old", sorted(TASK_TRANSITIONS))
@pytest.mark.parametrize("new", sorted(TASK_TRANSITIONS))
def test_task_state_machine_is_exactly_the_designs(old: str, new: str) -> None:
    allowed = old == new or new == "entered-in-error" or (old, new) in DESIGN_MACHINE
    assert (status_move_problem(old, new) is None) == allowed


def test_a_refused_status_move_says_where_the_task_may_go() -> None:
    assert status_move_problem("requested", "completed") == (
        "a Task cannot move from requested to completed; from requested it may move only to accepted, cancelled, received, rejected"
    )
    assert "it is final" in status_move_problem("completed", "in-progress")
    assert "not a Task status" in status_move_problem("requested", "done")


@pytest.mark.parametrize("new", ["accepted", "rejected", "in-progress", "completed", "failed", "received"])
def test_only_the_owner_accepts_rejects_starts_and_finishes(new: str) -> None:
    assert status_actor_problem("requested", new, OWNER) is None
    assert status_actor_problem("requested", new, REQUESTER) == f"only the Task's owner may set its status to {new}"
    assert status_actor_problem("requested", new, frozenset()) is not None


def test_only_the_requester_cancels() -> None:
    assert status_actor_problem("requested", "cancelled", REQUESTER) is None
    assert status_actor_problem("requested", "cancelled", OWNER) == "only the Task's requester may set its status to cancelled"
    assert status_actor_problem("in-progress", "in-progress", frozenset()) is None


def test_stage_graph_runs_referral_to_closed_with_the_community_branch() -> None:
    main_line = ["referral", "initial-meeting", "resource-allocation", "assessment", "preparation", "residential", "community-recovery", "closed"]
    for old, new in zip(main_line, main_line[1:]):
        assert stage_move_problem(old, new) is None
    assert stage_move_problem("resource-allocation", "alternative-pathway") is None
    assert stage_move_problem("alternative-pathway", "closed") is None
    assert set(STAGE_NEXT) == set(STAGES) == set(STAGE_STATUSES)


def test_stages_cannot_be_skipped_or_reversed() -> None:
    assert stage_move_problem("referral", "residential") == (
        "the pathway cannot move from referral to residential; after referral comes only initial-meeting"
    )
    assert stage_move_problem("assessment", "resource-allocation") is not None
    assert stage_move_problem("alternative-pathway", "residential") is not None
    assert "closed" in stage_move_problem("closed", "referral")
    assert "not a pathway stage" in stage_move_problem("referral", "detox")


def test_each_stage_runs_in_the_statuses_the_walk_through_gives() -> None:
    assert stage_status_problem("initial-meeting", "accepted") is None
    assert stage_status_problem("assessment", "in-progress") is None
    assert stage_status_problem("closed", "completed") is None
    assert stage_status_problem("initial-meeting", "in-progress") == "at stage initial-meeting the pathway Task's status must be accepted, not in-progress"
    assert stage_status_problem("residential", "cancelled") is None  # a pathway may end at any stage


def test_the_allocation_decision_chooses_the_branch() -> None:
    assert decision_problem("assessment", "yes") is None
    assert decision_problem("alternative-pathway", "no") is None
    assert decision_problem("assessment", "no") == "the resource allocation decision was 'no', so the pathway cannot move to assessment"
    assert "decision first" in decision_problem("alternative-pathway", None)
    assert decision_problem("preparation", None) is None


def test_episode_status_follows_the_pathway() -> None:
    assert episode_status("referral", "requested") == "planned"
    assert episode_status("residential", "in-progress") == "active"
    assert episode_status("closed", "completed") == "finished"
    assert episode_status("assessment", "cancelled") == "cancelled"
