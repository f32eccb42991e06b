"""``GET /fhir/MeasureReport``: the partnership's reports as FHIR MeasureReports.

Parameters: ``measure`` (a Measure's canonical URL or id: treatment-waiting-times, mat-1;
both when absent) and ``period`` (dates, optionally with eq/ge/le/gt/lt/sa/eb prefixes,
all within one quarter; the last complete quarter when absent). The answer is a searchset
Bundle: the MeasureReports, then their Measures (``search.mode`` include).
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.audit.chain import Actor, append, audit_event
from gateway.deps import base_url, caller, require_scope
from gateway.fhir import bundles
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError, FhirJSONResponse, fhir_response
from gateway.fhir.search import strict_handling
from gateway.pathway.config import load_pathway_conf
from gateway.pathway.records import organization_ref
from gateway.reporting.access import NOT_ENTITLED, may_receive_reports
from gateway.reporting.export import Reports
from gateway.reporting.measure import MAT1, MEASURE_BASE, MEASURES, WAITS, mat1_measure, mat1_measure_report, waits_measure, waits_measure_report
from gateway.reporting.quarters import Quarter
from gateway.reporting.waits import quarter_before
from gateway.store.repository import now_utc

router = APIRouter(tags=["FHIR"])
KNOWN_PARAMS = frozenset({"measure", "period", "_count", "_format"})
DATE_PREFIXES = ("eq", "ge", "le", "gt", "lt", "sa", "eb")


def _quarter(values: list[str], today: date) -> Quarter:
    """The one quarter the ``period`` values fall in; 400 saying why otherwise."""
    if not values:
        return quarter_before(today)
    quarters = set()
    for value in values:
        text = value[2:] if value[:2] in DATE_PREFIXES else value
        try:
            quarters.add(Quarter.containing(date.fromisoformat(text[:10])))
        except ValueError:
            raise FhirError(400, f"period {value!r} is not a date (YYYY-MM-DD, optionally prefixed ge/le/...)", "value", "period") from None
    if len(quarters) != 1:
        raise FhirError(400, "reports are by quarter: the period values must fall in one quarter (e.g. period=ge2026-07-01&period=le2026-09-30)", "value", "period")
    return quarters.pop()


def _measures(values: list[str]) -> list[str]:
    if not values:
        return list(MEASURES)
    wanted = []
    for value in ",".join(values).split(","):
        name = value.strip().removeprefix(MEASURE_BASE)
        if name not in MEASURES:
            raise FhirError(400, f"measure {value!r} is not known; the measures are {', '.join(MEASURE_BASE + m for m in MEASURES)}", "value", "measure")
        wanted.append(name)
    return list(dict.fromkeys(wanted))


@router.get("/fhir/MeasureReport", summary="The partnership's reports (waiting times, MAT 1) as MeasureReports", response_class=FhirJSONResponse)
def measure_reports(request: Request, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "MeasureReport", "s")
    params = list(request.query_params.multi_items())
    unknown = sorted({k for k, _ in params} - KNOWN_PARAMS)
    if unknown and strict_handling(request.headers.get("prefer")):
        raise FhirError(400, f"unknown search parameter(s) {', '.join(unknown)} for MeasureReport (handling=strict)", "not-supported")
    measures = _measures([v for k, v in params if k == "measure"])
    gateway = request.app.state.gateway
    now = now_utc()
    quarter = _quarter([v for k, v in params if k == "period"], now.date())
    actor = Actor(who.principal.client_id, who.organization, who.acting_for)
    with gateway.reading() as session:
        repo = gateway.repository(session)
        entitled = who.acting_for is None and may_receive_reports(repo, load_pathway_conf(session), who.organization, who.principal.roles)
    if not entitled:
        with gateway.transaction() as session:
            append(session, audit_event("search-type", actor, outcome="minor-failure", detail=f"MeasureReport refused: {NOT_ENTITLED}"), client_id=actor.client_id)
        raise FhirError(403, NOT_ENTITLED, "forbidden")
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        reports = Reports.load(repo)
        reporter = organization_ref(repo, who.organization)
        found, definitions = [], []
        if WAITS in measures:
            found.append(waits_measure_report(reports.waits(quarter), quarter, reporter, now))
            definitions.append(waits_measure())
        if MAT1 in measures:
            found.append(mat1_measure_report(reports.mat1(quarter), quarter, reporter, now))
            definitions.append(mat1_measure())
        detail = f"MeasureReport {', '.join(measures)} for {quarter} (aggregate counts)"
        append(session, audit_event("search-type", actor, detail=detail, purpose=who.purpose, entities=[f"MeasureReport/{r['id']}" for r in found]), client_id=actor.client_id)
    bundle = bundles.searchset(base_url(request), "MeasureReport", found, [(k, v) for k, v in params if k in KNOWN_PARAMS], None, False, included=definitions, total=len(found))
    return fhir_response(bundle)
