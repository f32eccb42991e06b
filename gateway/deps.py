"""FastAPI dependencies: the gateway, the authenticated caller, request bodies.

They are coroutines, so FastAPI runs them on the event loop instead of handing
each to a worker thread; the only I/O among them is the registration check of a
token's client, one indexed read per client at most once a second.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from gateway.auth.scopes import allows
from gateway.auth.tokens import AuthError, Principal
from gateway.fhir.access import Caller
from gateway.fhir.outcomes import FhirError
from gateway.fhir.validation import parse_json
from gateway.runtime import Gateway

PURPOSE_HEADER = "X-Pathway-Purpose"
ACTING_FOR_HEADER = "X-Pathway-Acting-For"
DEFAULT_PURPOSE = {"system": "TREAT", "portal": "carer-support"}


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def base_url(request: Request) -> str:
    """The URL partners reach the gateway at (configured, else as this request came in)."""
    configured = request.app.state.gateway.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


async def principal(request: Request) -> Principal:
    """The caller behind the bearer token, whose client is still registered and active;
    401 with an OperationOutcome otherwise. Every authenticated route depends on it."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise FhirError(401, "a bearer access token is required", "login", headers={"WWW-Authenticate": "Bearer"})
    try:
        who = request.app.state.gateway.tokens.verify(token.strip())
        request.app.state.registrations.require_active(who.client_id)
        return who
    except AuthError as exc:
        raise FhirError(
            401, str(exc), "security", headers={"WWW-Authenticate": f'Bearer error="{exc.error}"'}
        ) from None


async def caller(request: Request) -> Caller:
    """The principal with the purpose and person it asks for (headers, else defaults)."""
    who = await principal(request)
    purpose = request.headers.get(PURPOSE_HEADER) or DEFAULT_PURPOSE.get(who.kind, "TREAT")
    acting_for = request.headers.get(ACTING_FOR_HEADER)
    if acting_for is not None:
        kind, _, ident = acting_for.partition("/")
        if who.kind != "portal":
            raise FhirError(403, f"only portal clients may act for a person ({ACTING_FOR_HEADER})", "forbidden")
        if kind not in ("RelatedPerson", "Patient") or not ident:
            raise FhirError(400, f"{ACTING_FOR_HEADER} must be RelatedPerson/{{id}} or Patient/{{id}}", "value")
    elif who.kind == "portal":
        raise FhirError(400, f"portal clients must name the person they act for in {ACTING_FOR_HEADER}", "required")
    return Caller(who, purpose, acting_for)


_INTERACTIONS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def require_scope(who: Principal, resource_type: str, mode: str) -> None:
    """403 unless the token's scopes allow ``mode`` (SMART v2 letters, or v1 read/write) on the type."""
    if not allows(who.scopes, resource_type, mode):
        if mode in ("read", "write"):
            wanted, needs = mode, f"system/{resource_type}.{mode}"
        else:
            wanted = " and ".join(_INTERACTIONS.get(letter, letter) for letter in mode)
            v1 = "read" if set(mode) <= set("rs") else "write"
            needs = f"system/{resource_type}.{mode}, or in SMART v1 system/{resource_type}.{v1}"
        raise FhirError(403, f"token scopes do not allow {wanted} of {resource_type} (needs {needs})", "forbidden")


def require_special_scope(who: Principal, scope: str) -> None:
    if scope not in who.scopes:
        raise FhirError(403, f"token scopes do not include {scope}", "forbidden")


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())
