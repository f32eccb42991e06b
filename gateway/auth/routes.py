"""Token endpoint and published keys."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, Response

from gateway.audit.chain import Actor, append, audit_event
from gateway.auth.tokens import AuthError, authenticate_client, issue_access_token
from gateway.deps import base_url, get_gateway

router = APIRouter(tags=["Authentication"])
ASSERTION_LIFETIME = 300
ACCESS_TOKEN_LIFETIME = 300


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


@router.post("/oauth/token", summary="OAuth2 client credentials with a JWT client assertion")
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
    audiences = {f"{base}/oauth/token", str(request.url).split("?")[0]}
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
            event = audit_event("operation", None, outcome="minor-failure", detail=f"token refused: {error}")
            append(session, event, client_id=client_id)
        return _oauth_error(error)
    return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.get("/.well-known/jwks.json", summary="The gateway's public signing keys")
def jwks(request: Request) -> Response:
    return JSONResponse(get_gateway(request).signing_key.jwks())


@router.get("/.well-known/smart-configuration", summary="SMART Backend Services discovery")
def smart_configuration(request: Request) -> Response:
    base = base_url(request)
    return JSONResponse(
        {
            "token_endpoint": f"{base}/oauth/token",
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": ["system/*.read", "system/*.write", "system/Task.write", "ingest", "consent.decide", "audit.read"],
            "jwks_uri": f"{base}/.well-known/jwks.json",
        }
    )
