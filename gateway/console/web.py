"""The console's plumbing: signed-in users, roles, CSRF, audited pages, security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, append, audit_event
from gateway.auth.tokens import Principal
from gateway.console.auth import DPO, IG_OFFICER, PARTNERSHIP_LEAD, SENIOR_OFFICER, SignedIn, csrf_matches, resume_session
from gateway.delivery.escalation import open_escalations
from gateway.fhir.access import Caller
from gateway.fhir.service import FhirService
from gateway.runtime import Gateway
from gateway.sharing import break_glass

PREFIX = "/console"
SESSION_COOKIE = "pathway_console"
LOGIN_COOKIE = "pathway_console_login"
CONSOLE_CLIENT = "console"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
    )
)


class LoginRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class Refused(Exception):
    """The signed-in user may not do this; shown as an error page with the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def gateway_of(request: Request) -> Gateway:
    return request.app.state.host.state.gateway


def fhir_of(request: Request) -> FhirService:
    return request.app.state.host.state.fhir


def secure_cookies(request: Request) -> bool:
    """Cookies carry Secure whenever the console is reached over HTTPS."""
    public = gateway_of(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def actor(who: SignedIn) -> Actor:
    identity = who.identity
    return Actor(identity.client_id or CONSOLE_CLIENT, identity.organization, user=identity.username)


def audit_view(session: Session, request: Request, who: SignedIn, *, patient: str | None = None, outcome: str = "success", detail: str | None = None) -> None:
    """One AuditEvent for a console page view (or a refused one)."""
    what = detail or f"console page {request.method} {request.url.path}"
    event = audit_event("read", actor(who), outcome=outcome, detail=what, patient=patient)
    append(session, event, patient=patient, client_id=who.identity.client_id or CONSOLE_CLIENT)


def audit_change(session: Session, who: SignedIn, detail: str, *, patient: str | None = None) -> None:
    append(session, audit_event("operation", actor(who), detail=detail, patient=patient), patient=patient, client_id=who.identity.client_id or CONSOLE_CLIENT)


def signed_in(request: Request) -> SignedIn:
    """The session behind the request's cookie; otherwise off to the sign-in page."""
    token = request.cookies.get(SESSION_COOKIE, "")
    with gateway_of(request).reading() as session:
        who = resume_session(session, token)
    if who is None:
        raise LoginRequired()
    return who


def _requiring(what: str, *roles: str):  # type: ignore[no-untyped-def]
    def dependency(request: Request) -> SignedIn:
        who = signed_in(request)
        if not any(who.identity.has(role) for role in roles):
            named = " or ".join(f"{role.replace('-', ' ')}s" for role in roles)
            message = f"{what} are for {named}; your account does not have that role"
            with gateway_of(request).transaction() as session:
                audit_view(session, request, who, outcome="minor-failure", detail=f"console page refused {request.url.path}: {message}")
            raise Refused(403, message)
        return who

    return dependency


def lead_or_officer(request: Request) -> SignedIn:
    """Partnership figures: partnership leads and IG officers."""
    who = signed_in(request)
    if not (who.identity.has(PARTNERSHIP_LEAD) or who.identity.has(IG_OFFICER)):
        raise Refused(403, "your account has no console role")
    return who


officer = _requiring("person-level and governance pages", IG_OFFICER)
# Agreement pages: IG officers, and the DPOs and senior officers who review and sign.
agreement_reader = _requiring("agreement pages", IG_OFFICER, DPO, SENIOR_OFFICER)


def pending_break_glass(request: Request) -> int:
    """How many break-glass uses await an IG officer's review (the console's banner)."""
    with gateway_of(request).reading() as session:
        return len(break_glass.pending_reviews(session))


async def form_of(request: Request, who: SignedIn) -> dict[str, list[str]]:
    """The submitted form, after checking its CSRF token against the session's."""
    form = await request.form()
    if not csrf_matches(who.csrf, form.get("csrf") if isinstance(form.get("csrf"), str) else None):  # type: ignore[arg-type]
        raise Refused(403, "this form has expired or did not come from the console; reload the page and try again")
    return {key: [str(v) for v in form.getlist(key)] for key in form.keys()}


def one(form: dict[str, list[str]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return values[0].strip()


def console_caller(who: SignedIn, purpose: str = "HOPERAT") -> Caller:
    """The caller for FHIR writes made from the console (the account's registered client)."""
    identity = who.identity
    if not identity.client_id:
        raise Refused(403, "your account is not linked to a registered client, so it cannot record changes")
    principal = Principal(identity.client_id, identity.organization, frozenset(), frozenset(identity.roles), "system", 0)
    return Caller(principal, purpose)


def render(request: Request, who: SignedIn | None, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    base = {"who": who.identity if who else None, "csrf": who.csrf if who else "", "prefix": PREFIX, "path": request.url.path}
    if who is not None and who.identity.has(IG_OFFICER):
        base["break_glass_pending"] = pending_break_glass(request)
    if who is not None:  # escalated urgent alerts show on every page until acknowledged
        try:
            with gateway_of(request).reading() as session:
                base["escalations"] = open_escalations(session)
        except DBAPIError:  # an error page about the database must still render
            base["escalations"] = []
    return templates.TemplateResponse(request, template, base | context, status_code=status)


def redirect(path: str, **notice: str) -> RedirectResponse:
    """A 303 to a console path, optionally carrying a short notice to show there."""
    query = "&".join(f"{k}={quote(v)}" for k, v in notice.items())
    return RedirectResponse(f"{PREFIX}{path}{'?' + query if query else ''}", status_code=303)


async def security_headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def login_required(request: Request, _exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    who = None
    try:
        who = signed_in(request)
    except LoginRequired:
        pass
    return render(request, who, "error.html", {"status": exc.status, "message": exc.message}, status=exc.status)
