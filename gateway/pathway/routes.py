"""HTTP: the referral package (``GET /fhir/Task/{id}/$package``), acknowledging an urgent
alert (``POST /fhir/Communication/{id}/$ack``) and the pathway's timeliness figures
(``GET /pathway/metrics``)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.deps import caller, require_scope
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirJSONResponse, fhir_response
from gateway.pathway.alerts import acknowledge
from gateway.pathway.config import load_pathway_conf
from gateway.pathway.metrics import pathway_metrics
from gateway.pathway.package import referral_package
from gateway.store.repository import now_utc

router = APIRouter(tags=["Pathway"])


@router.get("/fhir/Task/{task_id}/$package", summary="Referral package for the Task's owner", response_class=FhirJSONResponse)
def package(request: Request, task_id: str, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Task", "read")
    gateway = request.app.state.gateway
    with gateway.transaction() as session:
        bundle = referral_package(session, gateway.repository(session), request.app.state.fhir.policy, who, task_id)
    return fhir_response(bundle)


@router.post("/fhir/Communication/{communication_id}/$ack", summary="Acknowledge an urgent (contingency) alert", response_class=FhirJSONResponse)
def ack(request: Request, communication_id: str, who: Caller = Depends(caller)) -> Response:
    require_scope(who.principal, "Communication", "read")
    gateway = request.app.state.gateway
    with gateway.transaction() as session:
        answer = acknowledge(session, gateway.repository(session), request.app.state.fhir.policy, who, communication_id, now_utc())
    return fhir_response(answer)


@router.get("/pathway/metrics", summary="Pathway timeliness figures (JSON)", dependencies=[Depends(caller)])
def metrics(request: Request) -> Response:
    gateway = request.app.state.gateway
    with gateway.reading() as session:
        figures = pathway_metrics(gateway.repository(session), load_pathway_conf(session))
    return Response(orjson.dumps(figures), media_type="application/json")
