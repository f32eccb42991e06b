"""Consent operations over HTTP: decide, simulate, break-glass, and the disclosure ledger."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

import consent
from gateway.audit.chain import append, audit_event
from gateway.auth.tokens import Principal
from gateway.deps import caller, get_gateway, json_body, principal, require_special_scope
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError, FhirJSONResponse, fhir_response, operation_outcome, withheld_warning
from gateway.sharing import break_glass
from gateway.sharing.people import patient_with
from gateway.sharing.policy import ConsentPolicy, simulated_caller
from gateway.audit.ledger import about_patient, ledger_entry
from gateway.store.models import DisclosureRow
from gateway.store.repository import Repository
from mappings.identifiers import canonical_person_system

router = APIRouter(tags=["Consent and information governance"])
JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def _policy(request: Request) -> ConsentPolicy:
    policy = request.app.state.fhir.policy
    if not isinstance(policy, ConsentPolicy):
        raise FhirError(501, "consent decisions need the consent policy", "not-supported")
    return policy


def require_ig(who: Principal) -> None:
    if "ig-officer" not in who.roles:
        raise FhirError(403, "only information-governance officers may do this", "forbidden")


def resolve_patient(repo: Repository, identifiers: Any) -> str | None:
    """The Patient reference for a request's person identifiers, if known here (a CHI only
    under the CHI system or its OID)."""
    if not isinstance(identifiers, list):
        return None
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        if identifier.get("system") == "reference":
            kind, _, ident = identifier["value"].partition("/")
            stored = repo.current("Patient", ident) if kind == "Patient" else None
            return stored.reference if stored is not None and not stored.deleted else None
        system = canonical_person_system(str(identifier.get("system")))
        found = patient_with(repo.session.connection(), repo.keyring, system, identifier["value"])
        if found is not None:
            return found
    return None


@router.post("/consent/$decide", summary="Decide a disclosure request (DESIGN §8)", openapi_extra=JSON_BODY)
async def decide(request: Request) -> Response:
    """A decision over the person's stored Consents and the current agreements. A caller that is
    not an IG officer is answered about a person it may not see as about an unknown person.

    Decided on the event loop from a read transaction (no write lock); answered once its
    audit entry is committed by the group-commit writer. The body and caller are taken here
    rather than as dependencies: FastAPI's dependency solving cost more than the decision."""
    body = await json_body(request)
    who = await caller(request)
    require_special_scope(who.principal, "consent.decide")
    if not isinstance(body, dict):
        raise FhirError(400, "body must be a decision request object", "structure")
    gateway = get_gateway(request)
    policy = _policy(request)
    with gateway.reading() as session:
        repo = gateway.repository(session)
        patient = resolve_patient(repo, body.get("patient"))
        if patient is not None and "ig-officer" not in who.principal.roles:
            record = repo.current("Patient", patient.split("/", 1)[1])
            if record is None or not request.app.state.fhir.may_know(session, who, record):
                patient = None
        (_, current), recorders = policy.conf(session)
        person = policy.person(session, patient, recorders) if patient else None
        agreements = current if body.get("holder") else None
        if person is not None and isinstance(body.get("patient"), list):
            # Consents may name the person by reference only; the request names them by CHI.
            body["patient"] = [*body["patient"], {"system": "reference", "value": patient}]
        decision = consent.decide(body, person.consents if person else [], agreements)
        if person is not None and person.ignored:
            decision["reasons"] = [*person.ignored, *decision["reasons"]]
    purpose = body.get("purpose") if isinstance(body.get("purpose"), str) else None
    event = audit_event("operation", None, patient=patient, purpose=purpose, detail=f"consent decision {decision['decision']} asked by {who.principal.client_id}")
    await gateway.audit.record(event, patient=patient, client_id=who.principal.client_id)
    return Response(orjson.dumps(decision), media_type="application/json")


@router.get("/consent/$simulate", summary="What a recipient would receive about a person today", response_class=FhirJSONResponse)
def simulate(
    request: Request,
    patient: str = Query(..., description="Patient/{id}"),
    recipient: str = Query(..., description="organisation SYSTEM|VALUE, or RelatedPerson/{id} for a carer"),
    purpose: str = Query(...),
    organization: str | None = Query(None, description="for a carer: the portal's organisation SYSTEM|VALUE"),
    who: Principal = Depends(principal),
) -> Response:
    require_ig(who)
    gateway = get_gateway(request)
    policy = _policy(request)
    try:
        subject = simulated_caller(recipient, purpose, organization)
    except ValueError as problem:
        raise FhirError(400, str(problem), "required", "organization") from None
    with gateway.transaction() as session:
        _, visible = policy.simulate(session, subject, patient)
        shown = [r for r in visible.resources if r is not None]
        event = audit_event("operation", None, patient=patient, purpose=purpose, detail=f"simulation of {recipient} by {who.client_id}")
        append(session, event, patient=patient, client_id=who.client_id)
    entries = [{"resource": r} for r in shown]
    if visible.withheld:
        entries.append({"resource": operation_outcome([withheld_warning()])})
    return fhir_response({"resourceType": "Bundle", "type": "collection", "entry": entries})


@router.post("/consent/$break-glass", summary="Emergency override (ETREAT), time-boxed and reviewed", openapi_extra=JSON_BODY)
def start_break_glass(request: Request, body: Any = Depends(json_body), who: Caller = Depends(caller)) -> Response:
    require_special_scope(who.principal, "break-glass")
    if not isinstance(body, dict):
        raise FhirError(400, "body must be an object with patient, user, reason, basis and hours", "structure")
    hours = body.get("hours", 24)
    if not isinstance(hours, (int, float)):
        raise FhirError(422, "hours must be a number", "value", "hours")
    gateway = get_gateway(request)
    with gateway.transaction() as session:
        grant = break_glass.start(
            session,
            who,
            patient=str(body.get("patient", "")),
            user=str(body.get("user", "")),
            reason=str(body.get("reason", "")),
            basis=str(body.get("basis", "")),
            hours=float(hours),
        )
    return Response(
        orjson.dumps({"id": grant.id, "patient": grant.patient, "ends": grant.ends.isoformat(), "review": "queued for IG review"}),
        status_code=201,
        media_type="application/json",
    )


@router.get("/disclosures", summary="The disclosure ledger for a person (IG officers)")
def disclosures(request: Request, patient: str = Query(...), who: Principal = Depends(principal)) -> Response:
    require_ig(who)
    gateway = get_gateway(request)
    with gateway.transaction() as session:
        rows = session.scalars(select(DisclosureRow).where(about_patient(session, patient)).order_by(DisclosureRow.at)).all()
        ledger = [ledger_entry(r) for r in rows]
        append(session, audit_event("operation", None, patient=patient, detail=f"disclosure ledger read by {who.client_id}"), patient=patient, client_id=who.client_id)
    return Response(orjson.dumps({"patient": patient, "disclosures": ledger}), media_type="application/json")
