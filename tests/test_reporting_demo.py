"""The reports on the demo partnership as ``pathway demo`` builds it: ``pathway report`` and the
MeasureReport (validated with fhir.resources), the console's reports page, its CSV downloads
and the partnership lead's sign-off; figures checked against the demo people's own plan."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.measurereport import MeasureReport
from sqlalchemy import select

from gateway.audit.chain import read_event
from gateway.cli import main
from gateway.reporting.models import ReportSignOffRow
from gateway.reporting.quarters import Quarter
from gateway.store.models import AuditRow
from tests.browser.world import Browser
from tests.demo_world import DemoWorld, demo_world

DECIDED = ("alternative-pathway", "assessment", "preparation", "residential", "community-recovery", "closed")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoWorld]:
    with demo_world(tmp_path_factory.mktemp("demo")) as built:
        yield built


def _spanned(world: DemoWorld) -> list[Quarter]:
    """Every quarter from the earliest demo referral to today."""
    first = Quarter.containing(min(date.fromisoformat(p.referral_date) for p in world.people))
    quarters = [Quarter.containing(date.today())]
    while quarters[-1] > first:
        quarters.append(quarters[-1].previous())
    return quarters[::-1]


def _report(world: DemoWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> str:
    monkeypatch.setenv("PATHWAY_DATABASE_URL", world.settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(world.settings.secrets_dir))
    out = tmp_path / "report.out"
    assert main(["report", *args, "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_pathway_report_waits_counts_what_the_demo_people_went_through(world: DemoWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    decided = [p for p in world.people if p.stage in DECIDED]
    completed = within = 0
    for quarter in _spanned(world):
        rows = list(csv.DictReader(io.StringIO(_report(world, monkeypatch, tmp_path, "waits", "--quarter", str(quarter)))))
        total = next(r for r in rows if r["service_type"] == "all" and r["substance"] == "all")
        completed += int(total["completed_waits"])
        within += int(total["completed_within_3_weeks"])
        report = MeasureReport.model_validate(orjson.loads(_report(world, monkeypatch, tmp_path, "waits", "--quarter", str(quarter), "--format", "fhir")))
        assert report.group[0].population[0].count == int(total["completed_waits"]) and report.period.start == quarter.start
    # every decided person completed one wait; within three weeks once the days away are taken off
    assert completed == len(decided) == 8
    assert within == sum(1 for p in decided if p.decision_days - p.unavailable_days <= 21) == 6
    assert len(rows) == 16


def test_the_measure_report_on_the_demo_goes_to_the_ig_officer_not_the_facility(world: DemoWorld) -> None:
    answer = world.client("ig-officer").get("MeasureReport")
    assert answer.status_code == 200, answer.text
    bundle = Bundle.model_validate(answer.json())
    matches = [e.resource for e in bundle.entry if e.search.mode == "match"]
    assert {type(r).__name__ for r in matches} == {"MeasureReport"} and bundle.total == 2
    assert {r.measure for r in matches} == {"https://pathway.scot/Measure/treatment-waiting-times", "https://pathway.scot/Measure/mat-1"}
    assert world.client("rehab-facility").get("MeasureReport").status_code == 403
    assert world.client("carer-portal").get("MeasureReport", headers={"X-Pathway-Acting-For": "Patient/x"}).status_code == 403


def _browser(world: DemoWorld, username: str) -> Browser:
    accounts = orjson.loads((world.out / "console-accounts.json").read_bytes())["accounts"]
    browser = Browser(world.url)
    assert browser.login(username, accounts[username]["password"]).status_code == 200
    return browser


def test_the_lead_sees_the_figures_downloads_them_and_confirms_the_quarter(world: DemoWorld) -> None:
    quarter = str(Quarter.containing(date.today()))
    lead = _browser(world, "partnership-lead")
    page = lead.get("/console/reports", quarter=quarter)
    assert page.status_code == 200, page.text
    assert "standard 90%" in page.text and "Completeness before sign-off" in page.text
    assert "open record" not in page.text and "IG officers see which" in page.text  # counts only for the lead
    download = lead.get("/console/reports/waits.csv", quarter=quarter, quarters="4")
    assert download.headers["content-type"].startswith("text/csv") and download.text.count("\r\n") == 1 + 4 * 16
    for figure in ("completeness", "mat1", "outcomes"):
        assert lead.get(f"/console/reports/{figure}.csv", quarter=quarter).status_code == 200
    stale = lead.post("/console/reports/sign-off", {"quarter": quarter, "digest": "0" * 64})
    assert stale.status_code == 409 and "has changed since you opened it" in stale.text
    lead.get("/console/reports", quarter=quarter)
    digest = page.text.split('name="digest" value="')[1].split('"')[0]
    confirmed = lead.post("/console/reports/sign-off", {"quarter": quarter, "digest": digest})
    assert confirmed.status_code == 200 and f"{quarter} confirmed" in confirmed.text and "Confirmed by partnership-lead" in confirmed.text
    assert world.gateway is not None
    with world.gateway.reading() as session:
        row = session.scalars(select(ReportSignOffRow)).one()
        events = [read_event(session, r).get("outcomeDesc", "") for r in session.scalars(select(AuditRow).order_by(AuditRow.seq.desc()).limit(20))]
    assert (row.quarter, row.confirmed_by, row.completeness_digest) == (quarter, "partnership-lead", digest)
    assert any(e.startswith(f"reports for {quarter} confirmed by partnership-lead") for e in events)
    assert any(e.startswith("console CSV download waits") for e in events)

    officer = _browser(world, "ig-officer")
    seen = officer.get("/console/reports", quarter=quarter)
    assert "open record" in seen.text and "Confirm " not in seen.text  # the records, but no sign-off
    assert officer.post("/console/reports/sign-off", {"quarter": quarter, "digest": digest}).status_code == 403
    assert officer.get("/console/reports", quarter="2026-Q9").status_code == 400


def test_the_dashboard_shows_the_standard_over_recent_quarters(world: DemoWorld) -> None:
    page = _browser(world, "partnership-lead").get("/console/dashboard")
    assert page.status_code == 200 and "Completed waits within three weeks, by quarter" in page.text
    assert f'href="/console/reports?quarter={Quarter.containing(date.today())}"' in page.text
