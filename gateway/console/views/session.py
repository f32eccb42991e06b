"""Sign in, sign out, and the home page."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.console.agreements import review_state, versions
from gateway.console.auth import IG_OFFICER, PasswordCheck, SignedIn, SignInThrottle, close_session, csrf_matches, open_session
from gateway.console.web import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    audit_view,
    form_of,
    gateway_of,
    lead_or_officer,
    redirect,
    render,
    secure_cookies,
    signed_in,
)
from gateway.delivery.models import DeliveryRow
from gateway.sharing.break_glass import pending_reviews
from gateway.store.repository import now_utc

router = APIRouter()
identity_provider = PasswordCheck()
throttle = SignInThrottle()
# One answer for every refused sign-in, locked or not: it tells nobody whether the
# password was right or whether the account exists.
SIGN_IN_REFUSED = "Sign-in failed: that username and password do not match an active account, or there were too many attempts (try again in 15 minutes)."


def _safe_next(target: str) -> str:
    """Only console paths: never an open redirect."""
    return target if target.startswith(PREFIX + "/") and not target.startswith("//") else PREFIX + "/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, None, "login.html", {"login_csrf": token, "next": _safe_next(next), "error": ""})
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies(request), path=PREFIX)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    gateway = gateway_of(request)
    if not csrf_matches(request.cookies.get(LOGIN_COOKIE, ""), str(form.get("csrf", ""))):
        return render(request, None, "login.html", {"login_csrf": request.cookies.get(LOGIN_COOKIE, ""), "next": target, "error": "The sign-in form expired; please try again."}, status=400)
    address = request.client.host if request.client else "unknown"
    with gateway.transaction() as session:
        locked = throttle.locked(session, username, address)
        identity = None if locked else identity_provider.authenticate(session, username, password)
        outcome = "success" if identity else "minor-failure"
        detail = f"console sign-in refused from {address}: {locked} is locked" if locked else f"console sign-in {'succeeded' if identity else 'failed'} from {address}"
        _audit_sign_in(session, username, identity.organization if identity else "", outcome, detail)
        if identity is None:
            if not locked:
                for key in throttle.failed(session, username, address):
                    _audit_sign_in(session, username, "", "serious-failure", f"console sign-in locked for {key} after repeated failures")
            return render(request, None, "login.html", {"login_csrf": request.cookies.get(LOGIN_COOKIE, ""), "next": target, "error": SIGN_IN_REFUSED}, status=401)
        throttle.succeeded(session, username)
        token, _ = open_session(session, identity)
    response = redirect(target.removeprefix(PREFIX))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies(request), path=PREFIX)
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


def _audit_sign_in(session: Session, username: str, organization: str, outcome: str, detail: str) -> None:
    event = audit_event("operation", Actor("console", organization, user=username[:100]), outcome=outcome, detail=detail)
    append(session, event, client_id="console")


@router.post("/logout")
async def logout(request: Request, who: SignedIn = Depends(signed_in)) -> Response:
    await form_of(request, who)
    with gateway_of(request).transaction() as session:
        close_session(session, request.cookies.get(SESSION_COOKIE, ""))
        audit_view(session, request, who, detail="console sign-out")
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, who: SignedIn = Depends(lead_or_officer)) -> Response:
    today = now_utc().date()
    with gateway_of(request).transaction() as session:
        counts = {}
        if who.identity.has(IG_OFFICER):
            current = [v[0].body for v in versions(session).values()]
            counts = {
                "break_glass": len(pending_reviews(session)),
                "dead": session.scalar(select(func.count()).select_from(DeliveryRow).where(DeliveryRow.status == "dead")) or 0,
                "reviews_overdue": sum(1 for body in current if review_state(body, today) == "overdue"),
                "reviews_due": sum(1 for body in current if review_state(body, today) == "due"),
            }
        audit_view(session, request, who)
    return render(request, who, "home.html", {"counts": counts})
