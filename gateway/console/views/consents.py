"""Consents: record, amend, withdraw (effect shown first) and "what would X see?"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from gateway.console.auth import SignedIn
from gateway.console.consents import CATEGORIES, PURPOSES, ConsentChoices, build_consent, choices_of
from gateway.console.directory_names import Directory, person_name
from gateway.console.views.people import patient_or_404
from gateway.console.web import Refused, audit_view, console_caller, fhir_of, form_of, gateway_of, officer, redirect, render
from gateway.delivery.models import SubscriptionRow
from gateway.fhir.service import WriteContext
from gateway.pathway.config import load_pathway_conf
from gateway.sharing.lifecycle import withdrawal_recipients
from gateway.sharing.policy import ConsentPolicy, simulated_caller
from gateway.store.repository import Repository, Stored, now_utc

router = APIRouter()
DEFAULT_YEARS = 2


def _recipients(repo: Repository, directory: Directory, patient: str) -> tuple[list[tuple[str, str]], dict[str, dict[str, Any]]]:
    """The choosable recipients (value, label) and the reference each is named by."""
    options: list[tuple[str, str]] = []
    actors: dict[str, dict[str, Any]] = {}
    for org in directory.organizations:
        system, _, value = org.identifier.partition("|")
        options.append((org.reference, org.name))
        actors[org.reference] = {"reference": org.reference, "identifier": {"system": system, "value": value}, "display": org.name}
    for _, carer in repo.search("RelatedPerson", patient=patient):
        name = person_name(carer.resource)
        relation = ((carer.resource.get("relationship") or [{}])[0].get("coding") or [{}])[0].get("display", "carer")
        options.append((carer.reference, f"{name} ({relation}, carer)"))
        identifier = next(({"system": i["system"], "value": i["value"]} for i in carer.resource.get("identifier", []) if i.get("system") and i.get("value")), None)
        actors[carer.reference] = {"reference": carer.reference, "display": name} | ({"identifier": identifier} if identifier else {})
    return options, actors


def _witnesses(repo: Repository) -> dict[str, dict[str, Any]]:
    found = {}
    for _, role in repo.search("PractitionerRole", batch=200):
        name = (role.resource.get("practitioner") or {}).get("display") or role.id
        job = ((role.resource.get("code") or [{}])[0].get("coding") or [{}])[0].get("display", "")
        found[role.reference] = {"reference": role.reference, "display": f"{name}, {job}" if job else name}
    return found


def _form_page(request: Request, who: SignedIn, session: Session, patient: Stored, choices: ConsentChoices, action: str, problems: list[str], status: int = 200) -> Response:
    repo = gateway_of(request).repository(session)
    options, _ = _recipients(repo, Directory.load(repo), patient.reference)
    context = {
        "patient": patient,
        "name": person_name(patient.resource),
        "choices": choices,
        "recipients": options,
        "witnesses": sorted(_witnesses(repo).values(), key=lambda w: w["display"]),
        "purposes": PURPOSES,
        "categories": CATEGORIES,
        "action": action,
        "problems": problems,
    }
    audit_view(session, request, who, patient=patient.reference)
    return render(request, who, "consent_form.html", context, status=status)


def _save(request: Request, who: SignedIn, patient_id: str, form: dict[str, list[str]], existing: Stored | None) -> Response:
    gateway = gateway_of(request)
    choices = ConsentChoices.from_form(form)
    action = f"/consents/{existing.id}/amend" if existing else f"/people/{patient_id}/consents"
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = patient_or_404(repo, patient_id)
        directory = Directory.load(repo)
        _, actors = _recipients(repo, directory, patient.reference)
        witnesses = _witnesses(repo)
        problems = choices.problems(set(actors))
        if choices.witness and choices.witness not in witnesses:
            problems.append("The witness must be chosen from the directory.")
        if problems:
            return _form_page(request, who, session, patient, choices, action, problems, status=422)
        own = directory.by_identifier(who.identity.organization)
        consent = build_consent(
            patient,
            choices,
            actors=actors,
            witness=witnesses.get(choices.witness),
            recorder=f"{who.identity.display_name} ({who.identity.username})",
            organization={"reference": own.reference, "display": own.name} if own else None,
            existing=existing.resource if existing else None,
        )
    fhir = fhir_of(request)
    if existing is None:
        stored = fhir.create(console_caller(who), consent, "Consent")
        notice = f"Consent {stored.id} recorded."
    else:
        stored = fhir.update(console_caller(who), consent, "Consent", existing.id, existing.version_id).stored
        notice = f"Consent {stored.id} amended (version {stored.version_id})."
    return redirect(f"/people/{patient_id}", notice=notice)


@router.get("/people/{patient_id}/consents/new", response_class=HTMLResponse)
def new_consent(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    today = now_utc().date()
    choices = ConsentChoices(start=today.isoformat(), end=(today + timedelta(days=365 * DEFAULT_YEARS)).isoformat())
    with gateway_of(request).transaction() as session:
        patient = patient_or_404(gateway_of(request).repository(session), patient_id)
        return _form_page(request, who, session, patient, choices, f"/people/{patient_id}/consents", [])


@router.post("/people/{patient_id}/consents")
async def record_consent(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    return _save(request, who, patient_id, form, None)


def _consent_or_404(repo: Repository, consent_id: str) -> Stored:
    stored = repo.current("Consent", consent_id)
    if stored is None or stored.deleted or not stored.patient:
        raise Refused(404, f"there is no consent Consent/{consent_id}")
    return stored


@router.get("/consents/{consent_id}/amend", response_class=HTMLResponse)
def amend_form(request: Request, consent_id: str, who: SignedIn = Depends(officer)) -> Response:
    with gateway_of(request).transaction() as session:
        repo = gateway_of(request).repository(session)
        consent = _consent_or_404(repo, consent_id)
        choices = choices_of(consent.resource)
        if choices is None or consent.resource.get("status") != "active":
            raise Refused(409, "only an active consent in the form's shape can be amended here; record a new consent with the person instead")
        patient = patient_or_404(repo, consent.patient.split("/", 1)[1])  # type: ignore[union-attr]
        return _form_page(request, who, session, patient, choices, f"/consents/{consent_id}/amend", [])


@router.post("/consents/{consent_id}/amend")
async def amend(request: Request, consent_id: str, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    with gateway_of(request).reading() as session:
        consent = _consent_or_404(gateway_of(request).repository(session), consent_id)
    return _save(request, who, consent.patient.split("/", 1)[1], form, consent)  # type: ignore[union-attr]


@router.get("/consents/{consent_id}/withdraw", response_class=HTMLResponse)
def withdraw_preview(request: Request, consent_id: str, who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        consent = _consent_or_404(repo, consent_id)
        if consent.resource.get("status") != "active":
            raise Refused(409, f"Consent/{consent_id} is {consent.resource.get('status')}; only an active consent can be withdrawn")
        directory = Directory.load(repo)
        ctx = WriteContext(session, repo, console_caller(who), fhir_of(request))
        pushed = {row.recipient for row in session.query(SubscriptionRow).filter(SubscriptionRow.event == "withdrawal-notice", SubscriptionRow.active.is_(True))}
        recipients = [(directory.name_of(r), r, r in pushed) for r in sorted(withdrawal_recipients(ctx, consent.reference))]
        patient = patient_or_404(repo, consent.patient.split("/", 1)[1])  # type: ignore[union-attr]
        audit_view(session, request, who, patient=patient.reference)
    return render(request, who, "withdraw.html", {"consent": consent, "patient": patient, "name": person_name(patient.resource), "recipients": recipients})


@router.post("/consents/{consent_id}/withdraw")
async def withdraw(request: Request, consent_id: str, who: SignedIn = Depends(officer)) -> Response:
    await form_of(request, who)
    with gateway_of(request).reading() as session:
        consent = _consent_or_404(gateway_of(request).repository(session), consent_id)
    withdrawn = dict(consent.resource) | {"status": "inactive"}
    withdrawn.pop("meta", None)
    fhir_of(request).update(console_caller(who), withdrawn, "Consent", consent_id, consent.version_id)
    return redirect(f"/people/{consent.patient.split('/', 1)[1]}", notice=f"Consent {consent_id} withdrawn; withdrawal notices are queued below.")  # type: ignore[union-attr]


@router.get("/people/{patient_id}/simulate", response_class=HTMLResponse)
def simulate(request: Request, patient_id: str, recipient: str = "", purpose: str = "", who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    policy = fhir_of(request).policy
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        patient = patient_or_404(repo, patient_id)
        directory = Directory.load(repo)
        carers = [(s.reference, person_name(s.resource)) for _, s in repo.search("RelatedPerson", patient=patient.reference)]
        shown: list[Stored] = []
        withheld = 0
        if recipient and purpose:
            if not isinstance(policy, ConsentPolicy):
                raise Refused(501, "simulation needs the consent-driven access policy, which this gateway is not running")
            if purpose not in PURPOSES:
                raise Refused(422, f"{purpose} is not a purpose of use")
            portal = directory.by_reference(f"Organization/{load_pathway_conf(session).carer_portal or ''}".replace("Organization/Organization/", "Organization/"))
            try:
                caller = simulated_caller(recipient, purpose, portal.identifier if portal else None)
            except ValueError as problem:
                raise Refused(422, f"{problem} (pathway.yaml carer_portal)") from None
            stored, visible = policy.simulate(session, caller, patient.reference)
            shown = [s for s, r in zip(stored, visible.resources) if r is not None]
            withheld = len(stored) - len(shown)
        audit_view(session, request, who, patient=patient.reference, detail=f"console simulation of {recipient or 'nobody'} for {purpose or '-'}")
    context = {
        "patient": patient,
        "name": person_name(patient.resource),
        "organizations": [(o.identifier, o.name) for o in directory.organizations],
        "carers": carers,
        "purposes": PURPOSES,
        "recipient": recipient,
        "purpose": purpose,
        "recipient_name": dict(carers).get(recipient) or directory.name_of(recipient),
        "shown": shown,
        "withheld": withheld,
        "asked": bool(recipient and purpose),
    }
    return render(request, who, "simulate.html", context)
