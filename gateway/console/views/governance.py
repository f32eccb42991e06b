"""Agreements, break-glass reviews and dead-lettered deliveries."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from gateway.audit.ledger import ledger_entry
from gateway.console.agreements import diff, effective_status, review_state, versions
from gateway.console.auth import DPO, IG_OFFICER, SignedIn
from gateway.console.directory_names import Directory
from gateway.console.web import Refused, agreement_reader, audit_change, audit_view, form_of, gateway_of, one, officer, redirect, render
from gateway.fhir.outcomes import FhirError
from gateway.delivery.outbox import ReplayRefused, listing, replay, replay_dead
from gateway.sharing import agreement_lifecycle as lifecycle, break_glass
from gateway.store.models import BreakGlassRow, DisclosureRow
from gateway.store.repository import now_utc

router = APIRouter()


# --- agreements ---------------------------------------------------------------------------


@router.get("/agreements", response_class=HTMLResponse)
def agreements(request: Request, notice: str = "", who: SignedIn = Depends(agreement_reader)) -> Response:
    today = now_utc().date()
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        lifecycle.sweep(session, today)
        drafts = [(d, orjson.loads(d.body)["title"]) for d in lifecycle.drafts(session)]
        directory = Directory.load(gateway.repository(session))
        rows = [
            {"id": agreement_id, "current": history[0], "status": effective_status(history[0].body, today), "review": review_state(history[0].body, today), "versions": len(history)}
            for agreement_id, history in versions(session).items()
        ]
        audit_view(session, request, who)
    return render(request, who, "agreements.html", {"rows": rows, "drafts": drafts, "directory": directory, "notice": notice})


@router.get("/agreements/{agreement_id}", response_class=HTMLResponse)
def agreement(request: Request, agreement_id: str, notice: str = "", who: SignedIn = Depends(agreement_reader)) -> Response:
    today = now_utc().date()
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        history = versions(session, agreement_id).get(agreement_id)
        if not history:
            raise Refused(404, f"there is no agreement {agreement_id}")
        directory = Directory.load(gateway.repository(session))
        drafts = lifecycle.drafts(session, agreement_id)
        steps = lifecycle.history(session, agreement_id)
        held = lifecycle.identifiers_of(session, who.identity.organization)
        resumption = lifecycle.resumption(session, lifecycle.current(session, agreement_id)) if history[0].status == "suspended" else None
        audit_view(session, request, who)
    changes = [(newer, older, diff(older.body, newer.body)) for newer, older in zip(history, history[1:])]
    current = history[0]
    identity = who.identity
    my_party = next((f"{p['system']}|{p['value']}" for p in current.body["parties"] if f"{p['system']}|{p['value']}" in held), None)
    context = {
        "agreement_id": agreement_id,
        "current": current,
        "status": effective_status(current.body, today),
        "review": review_state(current.body, today),
        "drafts": drafts,
        "steps": steps,
        "changes": changes,
        "history": history,
        "directory": directory,
        "notice": notice,
        "my_party": my_party,
        "can_draft": identity.has(IG_OFFICER) and my_party is not None,
        "can_suspend": (identity.has(IG_OFFICER) or identity.has(DPO)) and my_party is not None and current.status == "active",
        "resumption": resumption,
        "can_resume": (identity.has(IG_OFFICER) or identity.has(DPO)) and my_party is not None and resumption is not None and my_party not in resumption.confirmed,
    }
    return render(request, who, "agreement.html", context)


# --- break-glass reviews ----------------------------------------------------------------


@router.get("/break-glass", response_class=HTMLResponse)
def break_glass_queue(request: Request, notice: str = "", who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        grants = session.scalars(select(BreakGlassRow).order_by(BreakGlassRow.review_status != "pending", BreakGlassRow.started.desc()).limit(200)).all()
        accessed = {g.id: [ledger_entry(r) for r in session.scalars(select(DisclosureRow).where(DisclosureRow.break_glass == g.id).order_by(DisclosureRow.at))] for g in grants}
        written = {g.id: break_glass.written(session, g) for g in grants}
        reviewable = {g.id for g in grants if g.review_status == "pending" and break_glass.may_review(session, g, who.identity.organization)}
        directory = Directory.load(gateway.repository(session))
        audit_view(session, request, who)
    context = {"grants": grants, "written": written, "accessed": accessed, "outcomes": break_glass.REVIEW_OUTCOMES, "reviewable": reviewable, "directory": directory, "notice": notice}
    return render(request, who, "break_glass.html", context)


@router.post("/break-glass/{grant_id}/review")
async def review_break_glass(request: Request, grant_id: str, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    note = one(form, "note")
    if len(note) < 10:
        raise Refused(422, "write a review note of at least 10 characters saying why")
    reviewer = f"{who.identity.display_name} ({who.identity.username})"
    try:
        with gateway_of(request).transaction() as session:
            grant = break_glass.review(session, grant_id, reviewer=reviewer, organization=who.identity.organization, outcome=one(form, "outcome"), note=note)
    except FhirError as refusal:
        if refusal.status == 403:
            with gateway_of(request).transaction() as session:
                audit_view(session, request, who, outcome="minor-failure", detail=f"console step refused {request.url.path}: {refusal}")
        raise Refused(refusal.status, str(refusal)) from None
    return redirect("/break-glass", notice=f"Break-glass {grant.id} reviewed: {grant.review_status}.")


# --- deliveries -----------------------------------------------------------------------------


@router.get("/deliveries", response_class=HTMLResponse)
def dead_letters(request: Request, notice: str = "", who: SignedIn = Depends(officer)) -> Response:
    gateway = gateway_of(request)
    with gateway.transaction() as session:
        dead = listing(session, "dead", limit=500)
        directory = Directory.load(gateway.repository(session))
        audit_view(session, request, who)
    return render(request, who, "deliveries.html", {"dead": dead, "directory": directory, "notice": notice})


@router.post("/deliveries/replay", response_class=HTMLResponse)
async def replay_confirm(request: Request, who: SignedIn = Depends(officer)) -> Response:
    """First step: show how many deliveries would be queued again."""
    form = await form_of(request, who)
    everything = one(form, "all") == "yes"
    with gateway_of(request).transaction() as session:
        dead = listing(session, "dead", limit=100_000)
        chosen = [d for d in dead if everything or d["id"] in set(form.get("delivery", []))]
        audit_view(session, request, who, detail=f"console replay confirmation for {len(chosen)} deliveries")
    if not chosen:
        raise Refused(422, "choose at least one dead delivery to replay")
    return render(request, who, "replay_confirm.html", {"chosen": chosen, "everything": everything})


@router.post("/deliveries/replay/confirmed")
async def replay_confirmed(request: Request, who: SignedIn = Depends(officer)) -> Response:
    form = await form_of(request, who)
    try:
        with gateway_of(request).transaction() as session:
            if one(form, "all") == "yes":
                count = replay_dead(session)
            else:
                ids = form.get("delivery", [])
                for delivery_id in ids:
                    replay(session, delivery_id)
                count = len(ids)
            audit_change(session, who, f"{count} dead deliveries queued again from the console")
    except ReplayRefused as refusal:
        raise Refused(409, str(refusal)) from None
    return redirect("/deliveries", notice=f"{count} deliveries queued again.")
