"""Retries for days: a receiver down longer than the old schedule (about half an hour) gets every
delivery once it is back, its subscription shows ``error`` meanwhile, and only after
``retry_for_hours`` is a delivery dead-lettered. Time is simulated (the worker's clock jumps to
the next due attempt); nothing sleeps."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.conf import Delivery
from gateway.delivery.models import DeliveryRow, SubscriptionRow
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.access import CustodianPolicy
from gateway.runtime import Gateway
from tests.conftest import Clock
from tests.test_delivery import Receiver, refer, statuses, subscribe

SHIPPED = Delivery()  # 2 s doubling, capped at an hour, for 72 hours; error after 24 hours


def _next_due(gateway: Gateway) -> datetime | None:
    with gateway.reading() as session:
        return session.scalar(select(func.min(DeliveryRow.next_attempt_at)).where(DeliveryRow.status == "pending"))


def _run_until(gateway: Gateway, worker: DeliveryWorker, clock: Clock, hours: float) -> int:
    """Attempt every due delivery, jumping the clock to the next due one, until ``hours`` have
    passed (simulated) or nothing is pending; returns the rounds run."""
    start, rounds = clock(), 0
    while clock() - start < timedelta(hours=hours):
        worker.run_once()
        rounds += 1
        due = _next_due(gateway)
        if due is None:
            break
        clock.offset += max(due - clock(), timedelta(0)) + timedelta(milliseconds=1)
        assert rounds < 5000, "the schedule never ends"
    return rounds


def _subscription(gateway: Gateway) -> SubscriptionRow:
    with gateway.reading() as session:
        return session.scalars(select(SubscriptionRow).where(SubscriptionRow.event == "facility-referral")).one()


@pytest.fixture
def jwks(server: Any) -> dict[str, Any]:
    return httpx.get(f"{server.url}/.well-known/jwks.json").json()


def test_a_receiver_down_for_two_days_gets_everything_once_it_is_back(gateway: Gateway, jwks: dict[str, Any]) -> None:
    probe = Receiver(jwks)
    port, url = probe.server.server_address[1], probe.url
    probe.close()  # the endpoint is down: connections are refused
    subscribe(gateway, url)
    keys = refer(gateway, count=3)
    clock = Clock()
    worker = DeliveryWorker(gateway, CustodianPolicy(), settings=SHIPPED, threads=2, clock=clock)
    try:
        _run_until(gateway, worker, clock, hours=48)
        with gateway.reading() as session:
            rows = session.scalars(select(DeliveryRow).where(DeliveryRow.id.in_(keys))).all()
        # the old schedule (10 attempts, 2 s doubling to 10 minutes) had dead-lettered them in about 35 minutes
        assert {r.status for r in rows} == {"pending"}
        assert min(r.attempts for r in rows) > 10
        subscription = _subscription(gateway)
        assert subscription.status == "error" and "connection failed" in (subscription.last_error or "")
        assert subscription.error_since is not None

        back = Receiver(jwks, port=port)
        try:
            _run_until(gateway, worker, clock, hours=2)
            assert back.posts == Counter({key: 1 for key in keys})  # each once, none lost
            assert back.bad_signatures == 0
        finally:
            back.close()
        assert statuses(gateway) == Counter({"delivered": 3})
        recovered = _subscription(gateway)
        assert (recovered.status, recovered.error_since, recovered.last_error) == ("active", None, None)
    finally:
        worker.close()


def test_after_retry_for_hours_a_delivery_is_dead_lettered_saying_why(gateway: Gateway, jwks: dict[str, Any]) -> None:
    probe = Receiver(jwks)
    url = probe.url
    probe.close()
    subscribe(gateway, url)
    [key] = refer(gateway)
    clock = Clock()
    worker = DeliveryWorker(gateway, CustodianPolicy(), settings=Delivery(retry_for_hours=6, max_delay_seconds=1800), threads=2, clock=clock)
    try:
        _run_until(gateway, worker, clock, hours=8)
    finally:
        worker.close()
    with gateway.reading() as session:
        row = session.get(DeliveryRow, key)
    assert row.status == "dead"
    assert row.last_error.startswith("gave up after 6 hours (") and "connection failed" in row.last_error
    # not before its time: the last attempt was at least 6 hours after the event
    assert row.attempts > 8
