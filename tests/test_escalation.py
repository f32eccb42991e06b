"""Escalation of an early-exit (contingency) alert: not delivered within
``early_exit_alert.delivered_within_minutes`` (here the HSCP's receiver is down), or not
acknowledged with ``$ack`` in time, it is escalated once: audit record, console banner, and the
alert sent to pathway.yaml's fallback recipients. Time is simulated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.audit.chain import read_event
from gateway.delivery import sync_subscriptions
from gateway.delivery.escalation import open_escalations
from gateway.delivery.models import DeliveryRow, UrgentAlertRow
from gateway.delivery.worker import DeliveryWorker
from gateway.runtime import Gateway
from gateway.store.models import AuditRow
from tests.conftest import HSCP, PARTNER, Clock
from tests.test_delivery import Receiver
from tests.test_pathway_api import admit, consent_for, move, person, refer, to_residential
from tests.test_pathway_e2e import EARLY_EXIT, Parties, conf, conf_client, parties  # noqa: F401  (fixtures)
from tests.test_subscriptions import worker  # noqa: F401  (fixture)

RECOVERY = f"{PARTNER}|dundee-recovery-service"  # ODS S037R1 is its acting identifier
RECOVERY_ODS = "https://fhir.nhs.uk/Id/ods-organization-code|S037R1"


@pytest.fixture
def receivers(gateway: Gateway, server: Any, parties: Parties) -> Iterator[dict[str, Receiver]]:  # noqa: F811
    """The HSCP's endpoint (down: nothing listens) and the community team's (up)."""
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    down, up = Receiver(jwks), Receiver(jwks)
    down.close()
    with gateway.transaction() as session:
        sync_subscriptions(session, [(HSCP, down.url, ["contingency-alert"]), (RECOVERY_ODS, up.url, ["contingency-alert"])])
    yield {"hscp": down, "recovery": up}
    up.close()


def early_exit(parties: Parties, serial: int) -> str:
    """A person referred, admitted to Tayview House and leaving early: the alert's id."""
    social, facility = parties.social, parties.facility
    patient = person(social, serial)
    consent_for(social, patient, RECOVERY_ODS)  # the alert carries the contingency plan: the community team sees it with consent
    to_residential(social, refer(social, patient, f"REF-ESC-{serial}"))
    admitted = (date.today() - timedelta(days=10)).isoformat()
    stay = admit(facility, admitted)
    exited = move(facility, stay["id"], status="failed", statusReason=EARLY_EXIT, executionPeriod={"start": admitted, "end": date.today().isoformat()})
    assert exited.status_code == 200, exited.text
    alerts = social.get(f"Communication?category=contingency-alert&subject={patient}&recipient=Organization/dundee-hscp").json()["entry"]
    [alert] = [e["resource"] for e in alerts if e["resource"]["resourceType"] == "Communication"]
    return str(alert["id"])


def alert_row(gateway: Gateway, alert_id: str) -> UrgentAlertRow:
    with gateway.reading() as session:
        row = session.get(UrgentAlertRow, f"Communication/{alert_id}")
        assert row is not None
        session.expunge(row)
        return row


def deliveries_of(gateway: Gateway, alert_id: str) -> list[DeliveryRow]:
    with gateway.reading() as session:
        return list(session.scalars(select(DeliveryRow).where(DeliveryRow.focus == f"Communication/{alert_id}").order_by(DeliveryRow.created)))


def test_an_alert_not_delivered_in_five_minutes_is_escalated_once(  # type: ignore[no-untyped-def]
    gateway: Gateway, parties: Parties, receivers: dict[str, Receiver], worker: DeliveryWorker, clock: Clock  # noqa: F811
) -> None:
    alert_id = early_exit(parties, 51)
    worker.run_once()
    first = {d.recipient: d.status for d in deliveries_of(gateway, alert_id)}
    assert first == {HSCP: "pending", RECOVERY_ODS: "delivered"}

    clock.offset = timedelta(minutes=4)
    worker.sweep()
    assert alert_row(gateway, alert_id).escalated_at is None  # not yet late

    clock.offset = timedelta(minutes=6)
    worker.sweep()
    escalated = alert_row(gateway, alert_id)
    assert escalated.escalated_at is not None
    assert escalated.escalation_reason.startswith("not delivered within 5 minutes (")
    assert HSCP in escalated.escalation_reason and "connection failed" in escalated.escalation_reason
    # the fallback recipients (pathway.yaml: the community team) are sent it again, and get it
    worker.run_once()
    fallback = [d for d in deliveries_of(gateway, alert_id) if d.recipient == RECOVERY_ODS]
    assert [d.status for d in fallback] == ["delivered", "delivered"]
    assert len(receivers["recovery"].accepted) == 2
    # an audit record says why, and the console's list shows it
    with gateway.reading() as session:
        events = [read_event(session, a) for a in session.scalars(select(AuditRow).where(AuditRow.action == "operation"))]
        shown = [row.focus for row in open_escalations(session)]
    [record] = [e for e in events if "escalated" in e.get("outcomeDesc", "")]
    assert record["outcome"] == "8" and f"Communication/{alert_id}" in [e["what"]["reference"] for e in record["entity"]]
    assert shown == [f"Communication/{alert_id}"]

    # once only
    clock.offset = timedelta(hours=2)
    worker.sweep()
    assert len([d for d in deliveries_of(gateway, alert_id) if d.recipient == RECOVERY_ODS]) == 2


def test_an_acknowledged_alert_is_not_escalated_and_only_recipients_acknowledge(  # type: ignore[no-untyped-def]
    gateway: Gateway, parties: Parties, receivers: dict[str, Receiver], worker: DeliveryWorker, clock: Clock, make_client, conf  # noqa: F811
) -> None:
    with gateway.transaction() as session:  # the HSCP's receiver is fine this time
        sync_subscriptions(session, [(RECOVERY_ODS, receivers["recovery"].url, ["contingency-alert"])])
    alert_id = early_exit(parties, 52)
    worker.run_once()
    outsider = conf_client(make_client, conf, "rehab-facility-2")  # Lomond Brae, not a recipient
    assert outsider.post(f"Communication/{alert_id}/$ack").status_code == 404
    recovery = conf_client(make_client, conf, "recovery-service")
    answer = recovery.post(f"Communication/{alert_id}/$ack")
    assert answer.status_code == 200, answer.text
    assert {p["name"]: p for p in answer.json()["parameter"]}["by"]["valueString"] == RECOVERY_ODS

    clock.offset = timedelta(hours=3)  # past both deadlines
    worker.sweep()
    row = alert_row(gateway, alert_id)
    assert (row.escalated_at, row.acknowledged_by) == (None, RECOVERY_ODS)


def test_an_unacknowledged_alert_is_escalated_after_its_hour(  # type: ignore[no-untyped-def]
    gateway: Gateway, parties: Parties, receivers: dict[str, Receiver], worker: DeliveryWorker, clock: Clock  # noqa: F811
) -> None:
    with gateway.transaction() as session:
        sync_subscriptions(session, [(RECOVERY_ODS, receivers["recovery"].url, ["contingency-alert"])])
    alert_id = early_exit(parties, 53)
    worker.run_once()
    clock.offset = timedelta(minutes=30)
    worker.sweep()
    assert alert_row(gateway, alert_id).escalated_at is None  # delivered, and not an hour yet
    clock.offset = timedelta(minutes=61)
    worker.sweep()
    assert alert_row(gateway, alert_id).escalation_reason == "not acknowledged within 60 minutes"
