"""Push delivery in the console, in Chromium: a partner's inbox (what Tayview House received), a
failing endpoint (Tayview's task-status endpoint, down for a simulated day: subscription in
error, last error shown), and the banner of an escalated urgent alert. Screenshots go to
$PATHWAY_SCREENSHOTS (else the test's tmp_path/screens)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import httpx

from gateway.delivery import enqueue, sync_subscriptions
from gateway.delivery.models import UrgentAlertRow
from gateway.delivery.worker import DeliveryWorker
from gateway.store.repository import now_utc
from tests.browser.test_console_browser import app, page  # noqa: F401  (fixtures)
from tests.browser.world import HSCP, TAYVIEW, World, build_world
from tests.conftest import Clock
from tests.test_delivery import Receiver
from tests.test_subscriptions import SETTINGS

def test_an_operator_sees_a_partners_inbox_and_a_failing_endpoint(gateway, app, server, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    world: World = build_world(gateway, app, tmp_path / "demo")
    screens = Path(os.environ.get("PATHWAY_SCREENSHOTS") or tmp_path / "screens")
    screens.mkdir(parents=True, exist_ok=True)
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    tayview, stages = Receiver(jwks), Receiver(jwks)
    stages.close()  # the server taking Tayview's task-status events is down
    patient = f"Patient/{world.patient_id}"
    with gateway.transaction() as session:
        sync_subscriptions(session, [(TAYVIEW, tayview.url, ["facility-referral"]), (TAYVIEW, stages.url, ["task-status"])])
        repo = gateway.repository(session)
        owner = {"identifier": {"system": TAYVIEW.split("|")[0], "value": "rehab-tayview-house"}}
        for _ in range(3):
            task = repo.create({"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": patient}, "owner": owner}, HSCP)
            enqueue(session, event="facility-referral", recipient=TAYVIEW, focus=task.reference, patient=patient, purpose="CAREMGT")
            enqueue(session, event="task-status", recipient=TAYVIEW, focus=task.reference, patient=patient, purpose="CAREMGT")
        moment = now_utc()
        session.add(
            UrgentAlertRow(
                focus="Communication/example-alert", patient=patient, raised=moment - timedelta(minutes=9), escalated_at=moment - timedelta(minutes=3),
                escalation_reason=f"not delivered within 5 minutes ({HSCP}: connection failed: ConnectError: [Errno 111] Connection refused)",
            )
        )
    clock = Clock()
    worker = DeliveryWorker(gateway, app.state.fhir.policy, settings=SETTINGS, threads=2, clock=clock)
    try:
        worker.run_once()
        clock.offset = timedelta(hours=25)  # a day later it is still down
        worker.run_once()
    finally:
        worker.close()
        tayview.close()
    assert len(tayview.accepted) == 3

    def shot(name: str) -> None:
        page.screenshot(path=str(screens / f"{name}.png"), full_page=True)

    page.goto(f"{server.url}/console/")
    page.get_by_label("Username").fill("ig-officer")
    page.get_by_label("Password").fill(world.passwords["ig-officer"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="1 early-exit alert escalated").wait_for()
    page.get_by_role("link", name="Deliveries", exact=True).click()
    page.get_by_role("link", name="Failing endpoints, replay by filter, partner inboxes and subscriptions").click()
    page.get_by_role("heading", name="Failing endpoints").wait_for()
    failing = page.locator("table[aria-labelledby=failing-h] tbody tr").filter(has_text=stages.url)
    assert "Tayview House" in failing.inner_text() and "\terror\t3\t0\t" in failing.inner_text() and "connection failed" in failing.inner_text()
    shot("push-01-failing-endpoint")

    page.locator("table[aria-labelledby=inboxes-h]").get_by_role("link", name="Tayview House", exact=False).click()
    page.get_by_role("heading", name="What Tayview House Residential Rehabilitation received").wait_for()
    rows = page.locator("main table tbody tr")
    assert rows.filter(has_text="facility-referral").filter(has_text="delivered").count() == 3
    assert rows.filter(has_text="task-status").filter(has_text="pending").count() == 3
    shot("push-02-partner-inbox")

    page.get_by_role("link", name="Pathway dashboard").click()
    page.get_by_role("heading", name="Escalated urgent alerts").wait_for()
    shot("push-03-escalation-on-the-dashboard")
