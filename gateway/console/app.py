"""The console as a sub-application mounted at ``/console`` with its own error pages and headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from gateway.console.views import agreement_workflow, consents, dashboard, governance, people, push, reports, session
from gateway.console.web import LoginRequired, Refused, login_required, refused, render, security_headers, signed_in
from gateway.fhir.outcomes import FhirError


async def _fhir_refusal(request: Request, exc: Exception) -> Response:
    """A refusal from the FHIR service (a lifecycle rule, a conflict) as an error page."""
    assert isinstance(exc, FhirError)
    try:
        who = signed_in(request)
    except LoginRequired:
        who = None
    return render(request, who, "error.html", {"status": exc.status, "message": exc.issues[0]["diagnostics"]}, status=exc.status)


def create_console(host: FastAPI) -> FastAPI:
    """The console app; ``host`` is the gateway app whose state (gateway, FHIR service) it uses."""
    console = FastAPI(title="Pathway console", docs_url=None, redoc_url=None, openapi_url=None)
    console.state.host = host
    console.add_exception_handler(LoginRequired, login_required)
    console.add_exception_handler(Refused, refused)
    console.add_exception_handler(FhirError, _fhir_refusal)
    console.middleware("http")(security_headers)
    console.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in (session, people, consents, agreement_workflow, governance, push, dashboard, reports):
        console.include_router(module.router)
    return console
