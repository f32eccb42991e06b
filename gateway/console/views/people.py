"""People: search, a person's page, and the subject-access exports."""

from __future__ import annotations

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from gateway.console.auth import SignedIn
from gateway.console.consents import describe
from gateway.console.directory_names import Directory, person_name
from gateway.directory import consent_recorders
from gateway.console.people import SearchProblem, applicable_agreements, find_people, ledger, ledger_csv, person_consents, subject_access_bundle
from gateway.console.web import Refused, audit_view, gateway_of, officer, render
from gateway.delivery.models import DeliveryRow
from gateway.sharing.lifecycle import COMMUNICATION_CATEGORY
from gateway.store.repository import Repository, Stored

router = APIRouter()


def withdrawal_notices(session: Session, repo: Repository, patient: str) -> list[tuple[Stored, list[DeliveryRow]]]:
    """Withdrawal notices raised about the person, each with its push deliveries."""
    category = [("category", [f"{COMMUNICATION_CATEGORY}|withdrawal-notice"])]
    notices = [s for _, s in repo.search("Communication", category, patient=patient)]
    deliveries = session.scalars(select(DeliveryRow).where(DeliveryRow.focus.in_([n.reference for n in notices]))).all() if notices else []
    return [(n, [d for d in deliveries if d.focus == n.reference]) for n in notices]


def patient_or_404(repo: Repository, patient_id: str) -> Stored:
    stored = repo.current("Patient", patient_id)
    if stored is None or stored.deleted:
        raise Refused(404, f"there is no person Patient/{patient_id}; search for them by CHI or name")
    return stored


@router.get("/people", response_class=HTMLResponse)
def search(request: Request, q: str = "", dob: str = "", who: SignedIn = Depends(officer)) -> Response:
    results, how, problem = [], "", ""
    with gateway_of(request).transaction() as session:
        if q:
            try:
                results, how = find_people(gateway_of(request).repository(session), q, dob)
            except SearchProblem as exc:
                problem = str(exc)
        audit_view(session, request, who, detail=f"console person search ({how or 'no search'}): {len(results)} found")
    return render(request, who, "people.html", {"q": q, "dob": dob, "results": results, "how": how, "problem": problem})


@router.get("/people/{patient_id}", response_class=HTMLResponse)
def person(request: Request, patient_id: str, notice: str = "", who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = patient_or_404(repo, patient_id)
        directory = Directory.load(repo)
        consents = person_consents(repo, patient.reference, consent_recorders(session))
        carers = [(s.reference, person_name(s.resource)) for _, s in repo.search("RelatedPerson", patient=patient.reference)]
        context = {
            "patient": patient,
            "name": person_name(patient.resource),
            "consents": [(timeline, describe(timeline[0].resource.get("provision") or {})) for timeline in consents],
            "agreements": applicable_agreements(session, repo, patient.reference),
            "ledger": ledger(session, patient.reference),
            "carers": carers,
            "directory": directory,
            "notice": notice,
            "withdrawal_notices": withdrawal_notices(session, repo, patient.reference),
        }
        audit_view(session, request, who, patient=patient.reference)
    return render(request, who, "person.html", context)


@router.get("/people/{patient_id}/disclosures.csv")
def disclosures_csv(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = patient_or_404(repo, patient_id)
        body = ledger_csv(ledger(session, patient.reference), Directory.load(repo))
        audit_view(session, request, who, patient=patient.reference, detail="disclosure ledger exported as CSV")
    return Response(body, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="disclosures-{patient_id}.csv"'})


@router.get("/people/{patient_id}/subject-access.json")
def subject_access(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = patient_or_404(repo, patient_id)
        bundle = subject_access_bundle(repo, patient.reference, ledger(session, patient.reference), Directory.load(repo))
        audit_view(session, request, who, patient=patient.reference, detail="subject-access Bundle exported")
    return Response(
        orjson.dumps(bundle, option=orjson.OPT_INDENT_2),
        media_type="application/fhir+json",
        headers={"Content-Disposition": f'attachment; filename="subject-access-{patient_id}.json"'},
    )
