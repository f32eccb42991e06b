"""The audit trail for information-governance officers: ``GET /fhir/AuditEvent``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from gateway.audit.chain import append, audit_event, patient_index, read_event
from gateway.auth.tokens import Principal
from gateway.deps import base_url, get_gateway, principal, require_special_scope
from gateway.fhir import bundles
from gateway.fhir.search import MAX_COUNT
from gateway.store.models import AuditRow

router = APIRouter(tags=["Audit"])


@router.get("/fhir/AuditEvent", summary="AuditEvents about a person, newest first")
def audit_events(
    request: Request,
    patient: str = Query(..., description="Patient/{id}"),
    count: int = Query(50, alias="_count", ge=1, le=MAX_COUNT),
    offset: int = Query(0, alias="_offset", ge=0, le=10**9),  # beyond a database integer otherwise
    who: Principal = Depends(principal),
) -> Response:
    require_special_scope(who, "audit.read")
    reference = patient if "/" in patient else f"Patient/{patient}"
    gateway = get_gateway(request)
    with gateway.transaction() as session:
        rows = session.scalars(
            select(AuditRow)
            .where(AuditRow.patient == patient_index(session, reference))
            .order_by(AuditRow.seq.desc())
            .offset(offset)
            .limit(count + 1)
        ).all()
        events = [read_event(session, r) for r in rows[:count]]
        append(session, audit_event("search-type", None, patient=reference, detail=f"audit trail read by {who.client_id}"), patient=reference, client_id=who.client_id)
    params = [("patient", reference), ("_count", str(count)), ("_offset", str(offset))]
    next_offset = offset + count if len(rows) > count else None
    return Response(
        orjson.dumps(bundles.searchset(base_url(request), "AuditEvent", events, params, None if next_offset is None else [("_offset", str(next_offset))], False)),
        media_type="application/fhir+json",
    )
