"""Retry settings from pathway.yaml (the one settings model, gateway.conf.Delivery) and the backoff they give."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import yaml

from gateway.conf import Delivery, parse_pathway_settings
from gateway.delivery.retry import retry_after_seconds
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.access import CustodianPolicy
from gateway.runtime import Gateway
from gateway.store.models import ConfDocumentRow
from gateway.store.repository import now_utc
from tests.conftest import REPO


def test_defaults_hold_when_no_pathway_yaml_is_imported(gateway: Gateway) -> None:
    worker = DeliveryWorker(gateway, CustodianPolicy())
    try:
        assert worker.settings() == Delivery()
        assert Delivery().retry_for_hours >= 72  # retries for days, not minutes
    finally:
        worker.close()


def test_the_delivery_section_of_pathway_yaml_sets_the_retries(gateway: Gateway) -> None:
    document = yaml.safe_load((REPO / "conf" / "pathway.yaml").read_text())
    document["delivery"] = {"base_delay_seconds": 0.5, "max_attempts": 4}
    with gateway.transaction() as session:
        session.add(ConfDocumentRow(name="pathway.yaml", version=1, sha256="0" * 64, body=yaml.safe_dump(document), loaded=now_utc()))
    worker = DeliveryWorker(gateway, CustodianPolicy())
    try:
        assert worker.settings() == Delivery(base_delay_seconds=0.5, max_attempts=4)
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"max_attempts": 0}, "delivery.max_attempts: Input should be greater than or equal to 1"),
        ({"timeout": 3}, "delivery.timeout: unknown field"),
        ({"base_delay_seconds": 10, "max_delay_seconds": 1}, "delivery: max_delay_seconds is less than base_delay_seconds"),
        ({"retry_for_hours": "three days"}, "delivery.retry_for_hours: Input should be a valid number"),
    ],
)
def test_a_wrong_delivery_section_says_what_to_fix(section: dict[str, object], complaint: str) -> None:
    document = yaml.safe_load((REPO / "conf" / "pathway.yaml").read_text())
    document["delivery"] = section
    with pytest.raises(ValueError, match="pathway.yaml: " + complaint.replace("[", r"\[").replace("]", r"\]")):
        parse_pathway_settings(document)


def test_backoff_grows_exponentially_under_a_cap_with_full_jitter() -> None:
    settings = Delivery(base_delay_seconds=1, max_delay_seconds=30)
    rng = random.Random(3)
    waits = {attempt: [settings.backoff(attempt, rng) for _ in range(500)] for attempt in (1, 3, 10)}
    assert max(waits[1]) <= 1 and max(waits[3]) <= 4 and max(waits[10]) <= 30
    assert max(waits[10]) > 20 and min(waits[10]) < 5  # spread over the whole range


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
