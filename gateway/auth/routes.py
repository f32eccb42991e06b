"""Token endpoint and published keys."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, Response

from gateway.audit.chain import Actor, append, audit_event
from gateway.auth.tokens import AuthError, authenticate_client, issue_access_token
from gateway.deps import base_url, get_gateway
from gateway.fhir.capability import TOKEN_PATH, smart_configuration

router = APIRouter(tags=["Authentication"])
ASSERTION_LIFETIME = 300
ACCESS_TOKEN_LIFETIME = 300
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def token_endpoints(request: Request) -> set[str]:
    """The addresses a client assertion may name as its audience: the configured public
    URL's token endpoint; without one, this server's own address as the connection
    reached it (never the Host header, which the caller chooses), with the loopback
    names as one when it is a loopback address."""
    public_url = get_gateway(request).settings.public_url
    if public_url:
        return {public_url.rstrip("/") + TOKEN_PATH}
    host, port = request.scope.get("server") or ("", None)
    names = _LOOPBACK_NAMES if host in ("127.0.0.1", "::1") else (f"[{host}]" if ":" in host else host,)
    endpoints = set()
    for scheme, default_port in (("http", 80), ("https", 443)):
        netlocs = [f"{name}:{port}" for name in names] if port else []
        if port in (None, default_port):
            netlocs += names
        endpoints |= {f"{scheme}://{netloc}{TOKEN_PATH}" for netloc in netlocs}
    return endpoints


def _oauth_error(error: AuthError) -> Response:
    # RFC 6749 error fields plus an OperationOutcome a FHIR client can show.
    return JSONResponse(
        {
            "error": error.error,
            "error_description": str(error),
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "security", "diagnostics": str(error)}],
        },
        status_code=400 if error.error in ("invalid_request", "unsupported_grant_type", "invalid_scope") else 401,
        headers={"Cache-Control": "no-store", "WWW-Authenticate": "Bearer"},
    )


@router.post(TOKEN_PATH, summary="OAuth2 client credentials with a JWT client assertion")
def token(
    request: Request,
    grant_type: str = Form(...),
    client_assertion_type: str | None = Form(None),
    client_assertion: str | None = Form(None),
    client_id: str | None = Form(None),
    scope: str | None = Form(None),
) -> Response:
    gateway = get_gateway(request)
    base = base_url(request)
    if grant_type != "client_credentials":
        return _oauth_error(AuthError("grant_type must be client_credentials", "unsupported_grant_type"))
    if any("\x00" in value for value in (client_assertion_type, client_assertion, client_id, scope) if value):
        # No valid field holds one, and PostgreSQL cannot store one (not even in the audit entry).
        return _oauth_error(AuthError("a form field contains a NUL character", "invalid_request"))
    audiences = token_endpoints(request)
    try:
        with gateway.transaction() as session:
            client = authenticate_client(
                session,
                assertion_type=client_assertion_type,
                assertion=client_assertion,
                client_id=client_id,
                audiences=audiences,
                max_lifetime=ASSERTION_LIFETIME,
            )
            answer = issue_access_token(gateway.signing_key, client, scope, base, ACCESS_TOKEN_LIFETIME)
            event = audit_event("operation", Actor(client.id, client.organization), detail="access token issued")
            append(session, event, client_id=client.id)
    except AuthError as error:
        with gateway.transaction() as session:
            event = audit_event("operation", None, outcome="minor-failure", detail=f"token refused: {error.reason}")
            append(session, event, client_id=client_id)
        return _oauth_error(error)
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.get("/.well-known/jwks.json", summary="The gateway's public signing keys")
def jwks(request: Request) -> Response:
    return JSONResponse(get_gateway(request).signing_key.jwks())


@router.get("/.well-known/smart-configuration", summary="SMART Backend Services discovery")
@router.get("/fhir/.well-known/smart-configuration", summary="SMART Backend Services discovery (under the FHIR base)")
def smart_configuration_document(request: Request) -> Response:
    # Routed here, ahead of the FHIR router, whose /fhir/{type}/{id} read would demand a token.
    return JSONResponse(smart_configuration(base_url(request)))
