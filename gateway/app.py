"""The FastAPI application: ``create_app`` wires the gateway's parts together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.audit.routes import router as audit_router
from gateway.audit.writer import AuditUnavailable
from gateway.auth.routes import router as auth_router
from gateway.auth.tokens import ClientRegistrations
from gateway.console.app import create_console
from gateway.delivery.subscription_routes import router as subscription_router
from gateway.fhir.access import AccessPolicy
from gateway.fhir.outcomes import FHIR_JSON, FhirError, FhirJSONResponse, error_response, error_responses, fhir_error_handler
from gateway.fhir.routes import router as fhir_router
from gateway.fhir.service import FhirService
from gateway.ingest.routes import router as ingest_router
from gateway.ops import BodyDeadline, Metrics, RequestMiddleware, router as ops_router
from gateway.pathway import PathwayWorkflow, router as pathway_router
from gateway.plain_routes import PlainRoutes
from gateway.ratelimit import InputLimits, RateLimit, RateLimiter
from gateway.reporting.routes import router as reporting_router
from gateway.runtime import Gateway
from gateway.sharing.lifecycle import ConsentLifecycle
from gateway.sharing.policy import ConsentPolicy
from gateway.sharing.routes import router as sharing_router
from gateway.settings import Settings
from mappings.labels import label_resource

log = logging.getLogger("pathway")


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(FhirError(400, f"{where}: {first.get('msg')}", "invalid", where or None))


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    return error_response(FhirError(exc.status_code, str(exc.detail), code, headers=dict(exc.headers or {})))


async def _database_error(_request: Request, exc: Exception) -> Response:
    log.error("database unavailable", exc_info=exc)
    return error_response(
        FhirError(503, "the database is unavailable; nothing was changed, try again shortly", "transient", headers={"Retry-After": "5"})
    )


async def _audit_unavailable(_request: Request, exc: Exception) -> Response:
    log.error("audit trail unavailable", exc_info=exc)
    return error_response(FhirError(503, "the audit trail is unavailable, so nothing can be read now; try again shortly", "transient", headers={"Retry-After": "5"}))


async def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(FhirError(500, "internal error; nothing was changed", "exception"))


def fhir_service(gateway: Gateway, policy: AccessPolicy | None = None) -> FhirService:
    """The FHIR service with consent-driven access, labelling, and the consent and pathway hooks."""
    service = FhirService(gateway, policy or ConsentPolicy(gateway.keyring), label_resource)
    service.hooks.extend([ConsentLifecycle(), PathwayWorkflow()])
    return service


def create_app(settings: Settings | None = None, *, gateway: Gateway | None = None, policy: AccessPolicy | None = None) -> FastAPI:
    """Build the gateway application (migrating the database when it starts its own gateway).

    The OpenAPI description and its pages (``/openapi.json``, ``/docs``, ``/redoc``) are
    published only when ``settings.expose_api_docs`` says so."""
    gateway = gateway or Gateway.start(settings or Settings.from_env())
    docs = gateway.settings.expose_api_docs

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        gateway.close()

    app = FastAPI(
        title="Pathway",
        version="0.1.0",
        description="Information-sharing gateway for drug and alcohol recovery services (FHIR R4).",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.gateway = gateway
    app.state.registrations = ClientRegistrations(gateway.reading)
    app.state.metrics = Metrics()
    app.state.fhir = fhir_service(gateway, policy)
    app.add_exception_handler(FhirError, fhir_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(AuditUnavailable, _audit_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
    refusals = error_responses()
    routers = [
        (sharing_router, {"responses": refusals}),  # first: routes are matched in order, and $decide is the hottest
        (ops_router, {}),
        (auth_router, {"responses": error_responses((FHIR_JSON, "application/json"))}),  # OAuth errors are JSON
        (audit_router, {"responses": refusals, "default_response_class": FhirJSONResponse}),
        (ingest_router, {"responses": refusals}),
        (pathway_router, {"responses": refusals}),
        (subscription_router, {"responses": refusals}),  # ahead of the generic /fhir/{type} routes
        (reporting_router, {"responses": refusals}),  # before the generic /fhir/{type} routes
        (fhir_router, {"responses": refusals, "default_response_class": FhirJSONResponse}),
    ]
    routes = list(app.router.routes)  # the API documentation's, when published
    for router, options in routers:
        app.include_router(router, **options)
        routes += router.routes
    app.mount("/console", create_console(app))
    app.add_middleware(PlainRoutes, application=app, routes=routes)  # innermost
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # only what a route answers
    app.add_middleware(InputLimits)
    app.add_middleware(BodyDeadline, seconds=gateway.settings.body_timeout, ingest_seconds=gateway.settings.ingest_body_timeout)
    app.add_middleware(RateLimiter, limit=RateLimit.from_env(gateway.settings.workers), client_of=lambda token: gateway.tokens.verify(token).client_id)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    return app
