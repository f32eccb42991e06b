"""The pathway dashboard for partnership leads: figures and server-drawn charts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from gateway.console import charts
from gateway.console.auth import IG_OFFICER, SignedIn
from gateway.console.dashboard import WAIT_BANDS, dashboard_figures, overdue_reviews
from gateway.console.directory_names import Directory
from gateway.console.views.reports import waits_trend
from gateway.console.web import audit_view, gateway_of, lead_or_officer, render
from gateway.pathway.config import load_pathway_conf
from gateway.reporting.export import Reports
from gateway.reporting.quarters import Quarter
from gateway.reporting.waits import TARGET
from gateway.store.repository import now_utc

router = APIRouter()


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, who: SignedIn = Depends(lead_or_officer)) -> Response:
    today = now_utc().date()
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        conf = load_pathway_conf(session)
        figures = dashboard_figures(repo, conf, today)
        directory = Directory.load(repo)
        overdue = overdue_reviews(repo, conf, today, directory.name_of)
        trend = waits_trend(Reports.load(repo, today), Quarter.containing(today))
        audit_view(session, request, who)
    summary = figures["summary"]
    standard = conf.treatment_standard_days
    limit_at = (sum(1 for _, upper in WAIT_BANDS if upper <= standard), f"{standard}-day standard")
    context = {
        "figures": figures,
        "summary": summary,
        "overdue": overdue,
        "show_people": who.identity.has(IG_OFFICER),
        "stage_chart": charts.bar_chart("People by pathway stage", figures["stages"]),
        "admission_chart": charts.column_chart("Referral to admission: people by wait", figures["admission_waits"], reference=limit_at),
        "treatment_chart": charts.column_chart("Referral to treatment (allocation decision): people by wait", figures["treatment_waits"], reference=limit_at),
        "treated_meter": charts.share_meter("Treated within the standard", summary["treated_within_standard"]["share"], summary["treated_within_standard"]["target"]),
        "reviews_meter": charts.share_meter("Reviews on time", summary["reviews_on_time"]["share"], summary["reviews_on_time"]["target"]),
        "exits_chart": charts.column_chart("Early exits by month", figures["early_exits"]),
        "waits_chart": charts.share_columns("Completed waits within three weeks, by quarter", trend, TARGET),
        "this_quarter": Quarter.containing(today),
    }
    return render(request, who, "dashboard.html", context)
