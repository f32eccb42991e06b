"""Retry settings from pathway.yaml and the backoff they give."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from gateway.delivery.retry import RetrySettings, retry_after_seconds
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.access import CustodianPolicy
from gateway.runtime import Gateway
from gateway.store.models import ConfDocumentRow
from gateway.store.repository import now_utc


def test_defaults_hold_when_pathway_yaml_has_no_delivery_section(gateway: Gateway) -> None:
    worker = DeliveryWorker(gateway, CustodianPolicy())
    try:
        assert worker.settings() == RetrySettings()
    finally:
        worker.close()


def test_the_delivery_section_of_pathway_yaml_sets_the_retries(gateway: Gateway) -> None:
    body = "review_interval_weeks: 4\ndelivery:\n  base_delay_seconds: 0.5\n  max_attempts: 4\n"
    with gateway.transaction() as session:
        session.add(ConfDocumentRow(name="pathway.yaml", version=1, sha256="0" * 64, body=body, loaded=now_utc()))
    worker = DeliveryWorker(gateway, CustodianPolicy())
    try:
        assert worker.settings() == RetrySettings(base_delay_seconds=0.5, max_attempts=4)
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"max_attempts": 0}, "delivery.max_attempts must be a positive number"),
        ({"timeout": 3}, "unknown keys ['timeout']"),
        ({"base_delay_seconds": 10, "max_delay_seconds": 1}, "larger than max_delay_seconds"),
    ],
)
def test_a_wrong_delivery_section_says_what_to_fix(section: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        RetrySettings.from_section(section)


def test_backoff_grows_exponentially_under_a_cap_with_full_jitter() -> None:
    settings = RetrySettings(base_delay_seconds=1, max_delay_seconds=30)
    rng = random.Random(3)
    waits = {attempt: [settings.backoff(attempt, rng) for _ in range(500)] for attempt in (1, 3, 10)}
    assert max(waits[1]) <= 1 and max(waits[3]) <= 4 and max(waits[10]) <= 30
    assert max(waits[10]) > 20 and min(waits[10]) < 5  # spread over the whole range


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
