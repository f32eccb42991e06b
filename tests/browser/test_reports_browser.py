"""The partnership lead's reports in a real browser (Debian's Chromium, headless, driven by
Playwright) on the demo partnership. Screenshots go to $PATHWAY_SCREENSHOTS, else tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
import pytest

from gateway.reporting.quarters import Quarter
from tests.browser.test_console_browser import CHROMIUM, FLAGS
from tests.demo_world import DemoWorld, demo_world

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DemoWorld]:
    with demo_world(tmp_path) as built:
        yield built


def test_lead_reads_the_reports_and_confirms_the_quarter(world: DemoWorld, tmp_path: Path) -> None:
    screens = Path(os.environ.get("PATHWAY_SCREENSHOTS") or tmp_path / "screens")
    screens.mkdir(parents=True, exist_ok=True)
    password = orjson.loads((world.out / "console-accounts.json").read_bytes())["accounts"]["partnership-lead"]["password"]
    quarter = Quarter.containing(date.today())
    external: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1366, "height": 768}
        )
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(world.url) else route.abort())
        context.set_default_timeout(10000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("request", lambda r: external.append(r.url) if not r.url.startswith(world.url) else None)
            page.goto(f"{world.url}/console/login")
            page.get_by_label("Username").fill("partnership-lead")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.goto(f"{world.url}/console/dashboard")
            page.get_by_role("heading", name="Waiting times standard").wait_for()
            assert page.locator("svg[role=img] title", has_text="Completed waits within three weeks, by quarter").count() == 1
            page.screenshot(path=str(screens / "01-dashboard.png"), full_page=True)
            page.get_by_role("link", name="Quarterly reports, completeness and sign-off").click()
            page.get_by_role("heading", name="Completeness before sign-off").wait_for()
            assert page.locator("svg.chart").count() == 6  # trend, service type, substance, ongoing, MAT 1, outcomes
            assert "open record" not in page.content()  # the lead sees counts, not people
            page.screenshot(path=str(screens / "02-reports.png"), full_page=True)
            with page.expect_download() as download:
                page.get_by_role("link", name="MAT 1 (CSV)").click()
            assert download.value.suggested_filename == f"pathway-mat1-{quarter}.csv"
            page.get_by_role("button", name=f"Confirm {quarter} as shown").click()
            page.get_by_text(f"{quarter} confirmed:").first.wait_for()
            page.screenshot(path=str(screens / "03-confirmed.png"), full_page=True)
        finally:
            context.close()
    assert external == []
