"""Agreement lifecycle pages: draft, submit, DPO review, senior-officer sign-off, suspend and
resume; and one-off disclosures recorded against a person."""

from __future__ import annotations

import orjson
import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from consent.model import DATA_CATEGORIES
from gateway.audit import one_off
from gateway.console.auth import DPO, IG_OFFICER, SENIOR_OFFICER, SignedIn
from gateway.console.directory_names import Directory
from gateway.console.views.people import patient_or_404
from gateway.console.web import Refused, agreement_reader, audit_change, audit_view, form_of, gateway_of, officer, one, redirect, render
from gateway.sharing import agreement_lifecycle as lifecycle
from gateway.sharing.governance_models import AgreementDraftRow
from gateway.store.repository import now_utc

router = APIRouter()

PURPOSES = {"TREAT": "Care and treatment", "CAREMGT": "Care coordination", "HOPERAT": "Service operations", "PUBHLTH": "Statistics", "carer-support": "Carer support"}
ART6 = {
    "UK GDPR Art 6(1)(e)": "Art 6(1)(e) public task",
    "UK GDPR Art 6(1)(c)": "Art 6(1)(c) legal obligation",
    "UK GDPR Art 6(1)(d)": "Art 6(1)(d) vital interests",
    "UK GDPR Art 6(1)(a)": "Art 6(1)(a) consent",
    "UK GDPR Art 6(1)(f)": "Art 6(1)(f) legitimate interests",
}
ART9 = {
    "UK GDPR Art 9(2)(h)": "Art 9(2)(h) health or social care",
    "UK GDPR Art 9(2)(b)": "Art 9(2)(b) social protection law",
    "UK GDPR Art 9(2)(g)": "Art 9(2)(g) substantial public interest",
    "UK GDPR Art 9(2)(c)": "Art 9(2)(c) vital interests",
    "UK GDPR Art 9(2)(a)": "Art 9(2)(a) explicit consent",
}


def _who(who: SignedIn) -> str:
    return f"{who.identity.display_name} ({who.identity.username})"


def _body(form: dict[str, list[str]]) -> dict[str, object]:
    """The agreement a draft form describes (validated by the lifecycle)."""
    parties = [dict(zip(("system", "value"), p.split("|", 1))) for p in form.get("party", [])]
    basis = [b for b in (one(form, "art6"), one(form, "art9")) if b] + [line.strip() for line in one(form, "other_basis").splitlines() if line.strip()]
    body: dict[str, object] = {
        "title": one(form, "title"),
        "parties": parties,
        "purposes": form.get("purpose", []),
        "categories": form.get("category", []),
        "lawful_basis": basis,
        "start": one(form, "start"),
        "end": one(form, "end") or None,
        "review_date": one(form, "review_date") or None,
        "retention": one(form, "retention") or None,
    }
    if one(form, "doc_title") or one(form, "doc_reference") or one(form, "doc_sha256"):
        body["documents"] = [{"title": one(form, "doc_title"), "reference": one(form, "doc_reference"), "sha256": one(form, "doc_sha256").lower()}]
    return {k: v for k, v in body.items() if v is not None}


def _form_context(request: Request, body: dict[str, object]) -> dict[str, object]:
    gateway = gateway_of(request)
    with gateway.reading() as session:
        directory = Directory.load(gateway.repository(session))
    return {"body": body, "directory": directory, "purposes": PURPOSES, "categories": sorted(DATA_CATEGORIES), "art6": ART6, "art9": ART9}


def _refusing(request: Request, who: SignedIn, action):  # type: ignore[no-untyped-def]
    """Run a lifecycle step in one transaction; a refusal becomes a 409 page saying why, or a 403
    (audited) when the account's organisation is not a party to the agreement."""
    try:
        return action()
    except lifecycle.NotAParty as refusal:
        with gateway_of(request).transaction() as session:
            audit_view(session, request, who, outcome="minor-failure", detail=f"console step refused {request.method} {request.url.path}: {refusal}")
        raise Refused(403, str(refusal)) from None
    except (lifecycle.LifecycleRefused, one_off.OneOffRefused) as refusal:
        raise Refused(409, str(refusal)) from None


@router.get("/agreements/export.yaml")
def export(request: Request, who: SignedIn = Depends(officer)) -> Response:
    """Every version of every agreement, with the governance settings, as ``conf/agreements.yaml``
    (loading it again changes nothing)."""
    with gateway_of(request).transaction() as session:
        document = lifecycle.export(session)
        audit_view(session, request, who, detail="agreements exported as agreements.yaml")
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return Response(body, media_type="application/yaml", headers={"Content-Disposition": 'attachment; filename="agreements.yaml"'})


@router.get("/agreements/new", response_class=HTMLResponse)
def new_form(request: Request, who: SignedIn = Depends(officer)) -> Response:
    return render(request, who, "agreement_form.html", _form_context(request, {"parties": [], "purposes": [], "categories": [], "lawful_basis": []}) | {"action": "/agreements/new", "new": True})


@router.post("/agreements/new")
async def create(request: Request, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    agreement_id = one(form, "agreement_id")

    def act() -> str:
        with gateway_of(request).transaction() as session:
            return lifecycle.start_draft(session, agreement_id, _body(form), _who(who), organization=who.identity.organization).id

    draft_id = _refusing(request, who, act)
    return redirect(f"/agreements/drafts/{draft_id}", notice="Draft saved. Submit it for review when it is ready.")


@router.post("/agreements/{agreement_id}/new-version")
async def new_version(request: Request, agreement_id: str, who: SignedIn = Depends(officer)) -> Response:
    await form_of(request, who)

    def act() -> str:
        with gateway_of(request).transaction() as session:
            return lifecycle.new_version(session, agreement_id, _who(who), organization=who.identity.organization).id

    draft_id = _refusing(request, who, act)
    return redirect(f"/agreements/drafts/{draft_id}", notice="Draft of the next version saved; the version in force stays in force until this one is active.")


@router.get("/agreements/drafts/{draft_id}", response_class=HTMLResponse)
def draft_page(request: Request, draft_id: str, notice: str = "", who: SignedIn = Depends(agreement_reader)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        row = _refusing(request, who, lambda: lifecycle.draft(session, draft_id))
        progress = lifecycle.progress(session, row)
        steps = [s for s in lifecycle.history(session, row.agreement_id) if s.draft_id == row.id]
        in_force = lifecycle.current(session, row.agreement_id)
        directory = Directory.load(gateway.repository(session))
        held = lifecycle.identifiers_of(session, who.identity.organization)
        audit_view(session, request, who)
    identity = who.identity
    my_party = next((p for p in lifecycle.parties(row) if p in held), None)
    context = {
        "row": row,
        "body": orjson.loads(row.body),
        "progress": progress,
        "steps": steps,
        "in_force": in_force,
        "directory": directory,
        "notice": notice,
        "can_edit": identity.has(IG_OFFICER) and row.stage == "draft" and my_party is not None,
        "can_withdraw": identity.has(IG_OFFICER) and row.stage in lifecycle.OPEN_STAGES and my_party is not None,
        "can_review": identity.has(DPO) and row.stage == "review" and my_party is not None and my_party not in progress.approved,
        "can_sign": identity.has(SENIOR_OFFICER) and row.stage == "signing" and my_party is not None and my_party not in progress.signed,
        "my_party": my_party,
    }
    return render(request, who, "agreement_draft.html", context)


@router.get("/agreements/drafts/{draft_id}/edit", response_class=HTMLResponse)
def edit_form(request: Request, draft_id: str, who: SignedIn = Depends(officer)) -> Response:
    def read() -> AgreementDraftRow:
        with gateway_of(request).reading() as session:
            row = lifecycle.draft(session, draft_id)
            lifecycle.party_of(session, lifecycle.parties(row), who.identity.organization, row.agreement_id, "change its drafts")
            return row

    row = _refusing(request, who, read)
    body = orjson.loads(row.body)
    context = _form_context(request, body) | {"action": f"/agreements/drafts/{draft_id}/edit", "new": False, "agreement_id": row.agreement_id}
    return render(request, who, "agreement_form.html", context)


@router.post("/agreements/drafts/{draft_id}/edit")
async def edit(request: Request, draft_id: str, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)

    def act() -> None:
        with gateway_of(request).transaction() as session:
            lifecycle.edit(session, draft_id, _body(form), _who(who), organization=who.identity.organization)

    _refusing(request, who, act)
    return redirect(f"/agreements/drafts/{draft_id}", notice="Draft changed.")


@router.post("/agreements/drafts/{draft_id}/{step}")
async def step(request: Request, draft_id: str, step: str, who: SignedIn = Depends(agreement_reader)) -> Response:
    """Submit or withdraw (IG officer), approve or return (a party's DPO), sign (a party's senior officer)."""
    form = await form_of(request, who)
    identity, by = who.identity, _who(who)
    needs = {"submit": IG_OFFICER, "withdraw": IG_OFFICER, "approve": DPO, "return": DPO, "sign": SENIOR_OFFICER}
    if step not in needs:
        raise Refused(404, f"there is no step {step}")
    _needs(request, who, (needs[step],), f"{step} a draft")

    def act() -> str:
        with gateway_of(request).transaction() as session:
            if step == "submit":
                row = lifecycle.submit(session, draft_id, by, organization=identity.organization)
            elif step == "withdraw":
                row = lifecycle.withdraw(session, draft_id, by, organization=identity.organization)
            elif step == "sign":
                name = one(form, "name")
                if len(name) < 3:
                    raise lifecycle.LifecycleRefused("type your name and position as they should appear on the agreement")
                row = lifecycle.sign(session, draft_id, organization=identity.organization, name=name, by=by, today=now_utc().date())
            else:
                row = lifecycle.review(session, draft_id, organization=identity.organization, approve=step == "approve", comment=one(form, "comment"), by=by)
            return row.stage

    stage = _refusing(request, who, act)
    messages = {"review": "Submitted for review by every party's DPO.", "signing": "Approved by every party's DPO; it now needs every party's signature.",
                "signed": "Signed by every party; it becomes active on its start date.", "active": "Signed by every party: the new version is active now.",
                "draft": "Returned to the IG officer with your comments.", "withdrawn": "Draft withdrawn."}
    waiting = {"approve": "review", "sign": "signing"}  # still waiting for other parties
    notice = "Recorded; waiting for the other parties." if waiting.get(step) == stage else messages.get(stage, "Recorded.")
    return redirect(f"/agreements/drafts/{draft_id}", notice=notice)


@router.post("/agreements/{agreement_id}/suspend")
async def suspend(request: Request, agreement_id: str, who: SignedIn = Depends(agreement_reader)) -> Response:
    """A party's IG officer or DPO suspends the agreement at once."""
    form = await form_of(request, who)
    _needs(request, who, (IG_OFFICER, DPO), "suspend an agreement")

    def act() -> int:
        with gateway_of(request).transaction() as session:
            row = lifecycle.suspend(session, agreement_id, organization=who.identity.organization, reason=one(form, "reason"), by=_who(who))
            audit_change(session, who, f"agreement {agreement_id} version {row.version} made suspended")
            return row.version

    version = _refusing(request, who, act)
    return redirect(f"/agreements/{agreement_id}", notice=f"Version {version} is now suspended; the next decision uses it.")


@router.post("/agreements/{agreement_id}/resume")
async def resume(request: Request, agreement_id: str, who: SignedIn = Depends(agreement_reader)) -> Response:
    """A party's DPO confirms resumption for their party (a party's IG officer may ask for it);
    the agreement applies again once every party's DPO has confirmed."""
    form = await form_of(request, who)
    _needs(request, who, (DPO, IG_OFFICER), "ask for an agreement to be resumed")
    confirm = who.identity.has(DPO)

    def act() -> lifecycle.Resumption:
        with gateway_of(request).transaction() as session:
            standing = lifecycle.resume(session, agreement_id, organization=who.identity.organization, confirm=confirm, reason=one(form, "reason"), by=_who(who))
            done = f"made active (version {standing.resumed.version})" if standing.resumed else ("resumption confirmed" if confirm else "resumption requested")
            audit_change(session, who, f"agreement {agreement_id} {done}")
            return standing

    standing = _refusing(request, who, act)
    if standing.resumed is not None:
        notice = f"Every party's DPO has confirmed: version {standing.resumed.version} is now active; the next decision uses it."
    else:
        notice = f"{'Confirmed' if confirm else 'Requested'}; sharing restarts when every party's DPO has confirmed ({len(standing.awaiting)} still to confirm)."
    return redirect(f"/agreements/{agreement_id}", notice=notice)


def _needs(request: Request, who: SignedIn, roles: tuple[str, ...], doing: str) -> None:
    """Refuse (403, audited) an account holding none of ``roles``."""
    if not any(who.identity.has(role) for role in roles):
        message = f"only {' or '.join(r.replace('-', ' ') + 's' for r in roles)} of a party may {doing}"
        with gateway_of(request).transaction() as session:
            audit_view(session, request, who, outcome="minor-failure", detail=f"console step refused {request.url.path}: {message}")
        raise Refused(403, message)


# --- one-off disclosures ----------------------------------------------------------------------


@router.get("/people/{patient_id}/one-off", response_class=HTMLResponse)
def one_off_form(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        patient = patient_or_404(gateway.repository(session), patient_id)
        audit_view(session, request, who, patient=patient.reference)
    return render(request, who, "one_off.html", {"patient_id": patient_id, "purposes": one_off.PURPOSES, "decisions": one_off.DECISIONS})


@router.post("/people/{patient_id}/one-off")
async def one_off_record(request: Request, patient_id: str, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)

    def act() -> str:
        gateway = gateway_of(request)
        with gateway.transaction() as session:
            patient = patient_or_404(gateway.repository(session), patient_id)
            row = one_off.record(
                session, patient=patient.reference, requester=one(form, "requester"), purpose=one(form, "purpose"), lawful_basis=one(form, "lawful_basis"),
                necessity=one(form, "necessity"), disclosed=one(form, "disclosed"), resources=one(form, "resources").split(), decision=one(form, "decision"),
                decided_by=one(form, "decided_by"), recorded_by=_who(who), client_id=who.identity.client_id,
            )
            return row.decision

    decision = _refusing(request, who, act)
    return redirect(f"/people/{patient_id}", notice=f"One-off request recorded: {decision}.")
