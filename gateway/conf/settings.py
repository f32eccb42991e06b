"""The schema of ``pathway.yaml``: who runs the pathway and its clocks."""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from gateway.conf.errors import _json_like, _message, _where
from gateway.conf.schemas import AlertRecipient, Slug, _Strict, _unique


class TimeLimits(_Strict):
    referral_decision_days: Annotated[int, Field(ge=1, le=365)]
    treatment_standard_days: Annotated[int, Field(ge=1, le=365)]


class Targets(_Strict):
    treated_within_standard: Annotated[float, Field(ge=0, le=1)]
    reviews_on_time: Annotated[float, Field(ge=0, le=1)]


class EarlyExitAlert(_Strict):
    """Who is told of an early exit, and when an undelivered or unacknowledged alert is escalated."""

    notify: Annotated[list[AlertRecipient], Field(min_length=1), AfterValidator(_unique)]
    # Not delivered (2xx) to every subscribed recipient within this many minutes: escalate.
    delivered_within_minutes: Annotated[float, Field(gt=0, le=1440)] = 5
    # Not acknowledged ($ack) by a recipient organisation within this many minutes: escalate.
    acknowledged_within_minutes: Annotated[float, Field(gt=0, le=10080)] = 60
    # Organisations (partners.yaml ids) sent the alert when it is escalated.
    fallback: Annotated[list[Slug], AfterValidator(_unique)] = []


class Delivery(_Strict):
    """Push retries (``gateway.delivery.worker``): capped exponential backoff with full jitter
    for ``retry_for_hours`` after an event, then a dead letter for an operator to replay."""

    base_delay_seconds: Annotated[float, Field(gt=0)] = 2.0
    max_delay_seconds: Annotated[float, Field(gt=0)] = 3600.0
    retry_for_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 72.0
    # An optional cap on attempts as well (None: retry for retry_for_hours).
    max_attempts: Annotated[int, Field(ge=1, le=100000)] | None = None
    # A subscription whose oldest undelivered event has failed this long shows status error.
    error_after_hours: Annotated[float, Field(gt=0)] = 24.0
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    lease_seconds: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _backoff_order(self) -> Delivery:
        if self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("max_delay_seconds is less than base_delay_seconds")
        return self

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: exponential with full jitter."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** min(max(attempts - 1, 0), 60))
        return (rng or random).uniform(0, ceiling)


class Tokens(_Strict):
    access_token_seconds: Annotated[int, Field(ge=30, le=3600)]
    assertion_max_seconds: Annotated[int, Field(ge=30, le=300)]


class PathwaySettings(_Strict):
    """``conf/pathway.yaml``: who runs the pathway and its clocks."""

    rehab_team: Slug
    community_team: Slug
    advocacy_service: Slug | None = None
    alternative_pathway_agency: Slug | None = None
    carer_portal: Slug | None = None
    duty_key_worker: Slug | None = None
    handover: dict[Slug, Slug] = {}
    review_interval_weeks: Literal[4, 6]
    residential_weeks: Annotated[int, Field(ge=1, le=52)]
    time_limits: TimeLimits
    targets: Targets
    early_exit_alert: EarlyExitAlert
    delivery: Delivery = Delivery()
    tokens: Tokens


def parse_pathway_settings(document: Any) -> PathwaySettings:
    """A parsed ``pathway.yaml`` as its settings; ValueError naming each field that is wrong."""
    try:
        return PathwaySettings.model_validate(_json_like(document))
    except ValidationError as error:
        problems = [f"{_where(p['loc'], document)}: {_message(p)}" for p in error.errors()]
        raise ValueError("pathway.yaml: " + "; ".join(problems)) from None
