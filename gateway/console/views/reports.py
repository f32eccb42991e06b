"""The partnership's quarterly reports in the console: waiting times against the standard,
completeness, MAT 1 and outcome change as charts with tables, each figure as CSV, and the
partnership lead's sign-off of a quarter after seeing its completeness (audited)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from gateway.console import charts
from gateway.console.auth import PARTNERSHIP_LEAD, SignedIn
from gateway.console.directory_names import Directory
from gateway.console.web import Refused, audit_change, audit_view, form_of, gateway_of, lead_or_officer, one, redirect, render
from gateway.reporting.access import may_see_records
from gateway.reporting.completeness import ISSUES
from gateway.reporting.export import FIGURES, Reports, figure_csv
from gateway.reporting.outcomes import SMALL, outcomes_report
from gateway.reporting.quarters import Quarter
from gateway.reporting.records import SERVICE_TYPES
from gateway.reporting.signoff import SignOffRefused, latest_sign_off, sign_off
from gateway.reporting.waits import ALL, SUBSTANCE_GROUPS, TARGET, WaitsRow, ongoing_bands, quarter_before, quarter_waits, recent_quarters
from gateway.store.repository import now_utc

router = APIRouter()
TREND_QUARTERS = 4


def _quarter(text: str | None) -> Quarter:
    try:
        return Quarter.parse(text) if text else quarter_before(now_utc().date())
    except ValueError as error:
        raise Refused(400, str(error)) from None


def _row(rows: list[WaitsRow], service_type: str, substance: str) -> WaitsRow:
    return next(r for r in rows if r.service_type == service_type and r.substance == substance)


def waits_trend(reports: Reports, quarter: Quarter) -> list[tuple[str, float | None]]:
    """The share of completed waits within the standard for the quarters up to ``quarter``."""
    return [(str(q), _row(reports.waits(q), ALL, ALL).completed_share) for q in recent_quarters(quarter.end, TREND_QUARTERS)]


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, quarter: str = "", notice: str = "", who: SignedIn = Depends(lead_or_officer)) -> Response:
    chosen = _quarter(quarter)
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        reports = Reports.load(repo)
        rows = reports.waits(chosen)
        trend = waits_trend(reports, chosen)
        waits = quarter_waits(reports.referrals, chosen, reports.today)
        completeness = reports.completeness(chosen)
        mat = reports.mat1(chosen)
        outcomes = outcomes_report(repo)
        names = Directory.load(repo)
        signed = latest_sign_off(session, str(chosen))
        audit_view(session, request, who, detail=f"console reports for {chosen} (completeness records {'shown' if may_see_records(who.identity.roles) else 'counted only'})")
    total = _row(rows, ALL, ALL)
    context: dict[str, Any] = {
        "quarter": chosen,
        "quarters": recent_quarters(now_utc().date(), 6)[::-1],
        "notice": notice,
        "total": total,
        "until": min(chosen.end, reports.today),
        "rows": rows,
        "target": TARGET,
        "completeness": completeness,
        "issues": ISSUES,
        "show_records": may_see_records(who.identity.roles),
        "may_sign_off": who.identity.has(PARTNERSHIP_LEAD),
        "signed": signed,
        "mat": mat,
        "outcomes": outcomes,
        "name_of": names.name_of,
        "figures": FIGURES,
        "trend_chart": charts.share_columns("Completed waits within three weeks, by quarter", trend, TARGET),
        "service_chart": charts.share_columns(f"{chosen}: completed waits within three weeks by service type", [(k, _row(rows, k, ALL).completed_share) for k in SERVICE_TYPES], TARGET),
        "substance_chart": charts.share_columns(f"{chosen}: completed waits within three weeks by substance", [(s, _row(rows, ALL, s).completed_share) for s in SUBSTANCE_GROUPS], TARGET),
        "ongoing_chart": charts.column_chart(f"{chosen}: people still waiting, by time waited so far", ongoing_bands(waits), reference=(1, "3-week standard")),
        "outcomes_chart": charts.bar_chart(
            "People improved between first and latest reading (items with five or more people)",
            [(f"{'TOP' if o.measure == 'top' else 'Star'}: {o.item}", round(100 * o.improved / o.people)) for o in outcomes if o.people >= SMALL],
            unit="%", width=720, label_width=260,
        ),
        "mat_chart": charts.column_chart(f"{chosen}: days from presentation to OST start", list(mat.bands)),
    }
    return render(request, who, "reports.html", context)


@router.get("/reports/{figure}.csv")
def report_csv(request: Request, figure: str, quarter: str = "", quarters: int = 1, who: SignedIn = Depends(lead_or_officer)) -> Response:
    if figure not in FIGURES:
        raise Refused(404, f"there is no figure {figure!r}; the figures are {', '.join(FIGURES)}")
    chosen = _quarter(quarter)
    span = recent_quarters(chosen.end, max(1, min(quarters, 20)))
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        text = figure_csv(figure, gateway.repository(session), span)
        audit_view(session, request, who, detail=f"console CSV download {figure} for {span[0]}..{span[-1]} (aggregate)")
    filename = f"pathway-{figure}-{chosen}.csv" if figure != "outcomes" else f"pathway-{figure}.csv"
    return Response(text, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/reports/sign-off")
async def report_sign_off(request: Request, who: SignedIn = Depends(lead_or_officer)) -> Response:
    if not who.identity.has(PARTNERSHIP_LEAD):
        raise Refused(403, "a quarter is confirmed by the partnership lead; your account does not have that role")
    form = await form_of(request, who)
    chosen = _quarter(one(form, "quarter"))
    gateway = gateway_of(request)
    try:
        with gateway.transaction() as session:
            report = Reports.load(gateway.repository(session)).completeness(chosen)
            row = sign_off(session, report, one(form, "digest"), who.identity.username, who.identity.organization)
            audit_change(session, who, f"reports for {chosen} confirmed by {who.identity.username}: {row.complete} of {row.records} records complete (completeness {row.completeness_digest[:12]})")
    except SignOffRefused as refusal:
        raise Refused(409, str(refusal)) from None
    return redirect("/reports", quarter=str(chosen), notice=f"{chosen} confirmed: {row.complete} of {row.records} records complete.")
