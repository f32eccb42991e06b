"""The pathway's subscription topics (Subscriptions R5 Backport ``SubscriptionTopic`` canonicals).

Each pathway event is a topic a partner may subscribe to: its canonical URL, the resource types
of its focus (the partner's scopes must allow reading them), and the filters it allows. The
workflow decides which organisations an event is for (``gateway.pathway.notify``); a
subscription only chooses which of them reach an endpoint, never adds recipients.
"""

from __future__ import annotations

from dataclasses import dataclass

TOPIC_BASE = "https://pathway.scot/SubscriptionTopic/"


@dataclass(frozen=True)
class Topic:
    """One subscription topic."""

    event: str
    focus_types: tuple[str, ...]
    description: str
    filters: tuple[str, ...] = ("patient",)

    @property
    def canonical(self) -> str:
        return TOPIC_BASE + self.event


TOPICS: dict[str, Topic] = {
    topic.event: topic
    for topic in (
        Topic("referral", ("Task",), "A pathway Task (referral) is created for, or handed to, the organisation"),
        Topic("facility-referral", ("Task",), "A rehab facility (or other provider) is asked to take a person on"),
        Topic("task-status", ("Task",), "A pathway or facility Task the organisation follows changes stage or status"),
        Topic("review", ("Encounter", "Flag"), "A residential review is recorded, or one is overdue (Flag)"),
        Topic("review-summary", ("Communication",), "A carer-safe review summary"),
        Topic("contingency-alert", ("Communication",), "Urgent: early exit from residential rehab (contingency plan)"),
        Topic("withdrawal-notice", ("Communication",), "A person withdrew consent to share with the organisation", filters=()),
        Topic("agreement-notice", ("Communication",), "An information-sharing agreement the organisation is party to lapsed", filters=()),
        Topic("break-glass-alert", ("Communication",), "Break-glass was used (for the IG officers' relay; names the override, not the person)", filters=()),
    )
}


def topic_of(canonical: str) -> Topic | None:
    """The topic a canonical URL names, if it is one of ours."""
    return TOPICS.get(canonical.removeprefix(TOPIC_BASE)) if canonical.startswith(TOPIC_BASE) else None
