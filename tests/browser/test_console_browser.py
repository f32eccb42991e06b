"""The console in a real browser: Debian's Chromium, headless, driven by Playwright against
the gateway on 127.0.0.1. Screenshots of every page go to the test's tmp_path/screens."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.audit.ledger import disclosure, insert_disclosures
from gateway.delivery.models import DeliveryRow
from gateway.sharing import agreement_lifecycle as lifecycle
from gateway.sharing.policy import ConsentPolicy
from gateway.store.models import AgreementRow, BreakGlassRow
from gateway.store.repository import now_utc
from tests.browser.world import DRAFT_AGREEMENT, TAYVIEW, World, build_world

CHROMIUM = os.environ.get("PATHWAY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def app(gateway):  # type: ignore[no-untyped-def]
    return create_app(gateway=gateway, policy=ConsentPolicy(gateway.keyring))


@pytest.fixture
def page(server, tmp_path: Path) -> Iterator["sync_api.Page"]:  # type: ignore[no-untyped-def]
    """A fresh Chromium profile that may reach only the test server."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1366, "height": 768}
        )
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url) else route.abort())
        context.set_default_timeout(5000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_ig_officer_works_through_the_console(gateway, app, server, page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world: World = build_world(gateway, app, tmp_path / "demo")
    screens = tmp_path / "screens"
    screens.mkdir()
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(server.url) else None)

    def shot(name: str) -> None:
        page.screenshot(path=str(screens / f"{name}.png"), full_page=True)

    # sign in; the skip link is the first thing the keyboard reaches
    page.goto(f"{server.url}/console/")
    assert page.url.endswith("/console/login?next=/console/")
    shot("01-login")
    page.get_by_label("Username").fill("ig-officer")
    page.get_by_label("Password").fill(world.passwords["ig-officer"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Welcome, Morven Laird (IG officer, demo)").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    shot("02-home")

    # find the person by CHI
    page.get_by_role("link", name="People", exact=True).click()
    page.get_by_label("CHI number or name").fill(world.chi)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Isla Duncan").click()
    page.get_by_role("heading", name="Isla Duncan").wait_for()
    shot("03-person")

    # record a consent with her: the facility and her mother, progress only, never mental health
    page.get_by_role("link", name="Record a consent").click()
    page.get_by_label("Tayview House", exact=False).check()
    page.get_by_label("Morag Duncan (mother, carer)").check()
    page.get_by_label("Care and treatment (TREAT)").check()
    page.get_by_label("Carer support (carer-support)").check()
    page.locator("#category-pathway-progress").check()
    page.locator("#exclude-mental-health").check()
    page.get_by_label("Witnessed by").select_option("PractitionerRole/adv-fiona-crichton")
    shot("04-consent-form")
    page.get_by_role("button", name="Save consent").click()
    page.get_by_role("status").filter(has_text="recorded").wait_for()
    consent_heading = page.locator("section.consent h3").first.inner_text()
    consent_id = consent_heading.split()[1]
    shot("05-consent-recorded")

    # what would her mother see through the carers' portal?
    page.get_by_role("link", name="What would someone see?").click()
    page.get_by_label("Recipient").select_option(f"RelatedPerson/{world.carer_id}")
    page.get_by_label("Purpose").select_option("carer-support")
    page.get_by_role("button", name="Simulate").click()
    page.get_by_role("heading", name="Morag Duncan for carer-support would see").wait_for()
    shot("06-simulate-carer")

    # the facility received data under this consent; withdrawing it shows who will be told, then tells them
    with gateway.transaction() as session:
        insert_disclosures(session, [disclosure(at=now_utc(), patient=f"Patient/{world.patient_id}", recipient=TAYVIEW, acting_for=None, client_id="rehab-facility", purpose="TREAT", channel="api", resources=[f"Patient/{world.patient_id}/_history/1"], agreements=["isa-dhscp-tayview@2"], consents=[f"Consent/{consent_id}"], break_glass=None)])
    page.get_by_role("link", name="Back to Isla Duncan").click()
    page.get_by_role("link", name="Withdraw…").click()
    page.get_by_text("pushed to their endpoint").wait_for()
    shot("07-withdraw-preview")
    page.get_by_role("button", name="Withdraw consent").click()
    page.get_by_role("heading", name="Withdrawal notices").wait_for()
    assert page.locator("#notices + table .status.pending").count() == 1
    shot("08-withdrawn")

    # a draft agreement goes to review and sign-off as a new version (tests/browser/test_agreements_browser.py follows it through)
    page.get_by_role("link", name="Agreements").click()
    shot("09-agreements")
    page.get_by_role("link", name="HSCP and Tayview House - aftercare pilot").click()
    page.get_by_role("button", name="Draft the next version").click()
    page.get_by_role("status").filter(has_text="Draft of the next version saved").wait_for()
    shot("10-agreement-next-version")

    # review the break-glass override
    page.get_by_role("link", name="Break-glass reviews").click()
    page.get_by_label("Outcome").select_option("justified")
    page.get_by_label("Review note").fill("Out-of-hours adult protection referral; access was proportionate.")
    shot("11-break-glass")
    page.get_by_role("button", name="Record review").click()
    page.get_by_role("status").filter(has_text="justified").wait_for()

    # replay the dead letter, seeing the count first
    page.get_by_role("link", name="Deliveries").click()
    page.get_by_label("Replay task-status to Tayview House", exact=False).check()
    shot("12-dead-letters")
    page.get_by_role("button", name="Replay selected…").click()
    page.get_by_role("heading", name="Replay 1 delivery?").wait_for()
    shot("13-replay-confirm")
    page.get_by_role("button", name="Replay 1").click()
    page.get_by_role("status").filter(has_text="1 deliveries queued again").wait_for()

    # the dashboard
    page.get_by_role("link", name="Pathway dashboard").click()
    page.get_by_role("heading", name="People by stage").wait_for()
    assert page.locator("svg.chart").count() == 7  # with the waiting-times standard by quarter
    shot("14-dashboard")

    with gateway.reading() as session:
        assert [(d.stage, d.created_by[:12]) for d in lifecycle.drafts(session, DRAFT_AGREEMENT)] == [("draft", "Morven Laird")]
        assert session.get(AgreementRow, (DRAFT_AGREEMENT, 2)) is None  # a draft is not a version until every party signs
        assert session.get(BreakGlassRow, world.grant_id).review_status == "justified"
        assert session.get(DeliveryRow, world.dead_id).status == "pending"
        assert [d.recipient for d in session.scalars(select(DeliveryRow).where(DeliveryRow.event == "withdrawal-notice"))] == [TAYVIEW]
    assert external == []
    assert len(list(screens.glob("*.png"))) == 14
