"""The schema of ``pathway.yaml``: who runs the pathway and its clocks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from gateway.conf.schemas import AlertRecipient, Slug, _Strict, _unique


class TimeLimits(_Strict):
    referral_decision_days: Annotated[int, Field(ge=1, le=365)]
    treatment_standard_days: Annotated[int, Field(ge=1, le=365)]


class Targets(_Strict):
    treated_within_standard: Annotated[float, Field(ge=0, le=1)]
    reviews_on_time: Annotated[float, Field(ge=0, le=1)]


class EarlyExitAlert(_Strict):
    notify: Annotated[list[AlertRecipient], Field(min_length=1), AfterValidator(_unique)]


class Delivery(_Strict):
    """Push retries; the key names are those ``gateway.delivery.retry.RetrySettings`` reads."""

    max_attempts: Annotated[int, Field(ge=1, le=50)]
    base_delay_seconds: Annotated[float, Field(gt=0)]
    max_delay_seconds: Annotated[float, Field(gt=0)]
    timeout_seconds: Annotated[float, Field(gt=0, le=120)]
    lease_seconds: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _backoff_order(self) -> Delivery:
        if self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("max_delay_seconds is less than base_delay_seconds")
        return self


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
    delivery: Delivery
    tokens: Tokens
