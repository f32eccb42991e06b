"""Operations: request ids, JSON logs, Prometheus metrics, health."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.deps import get_gateway, principal
from gateway.fhir.outcomes import FhirError, error_response
from gateway.sharing import agreement_metrics
from gateway.store.repository import now_utc

log = logging.getLogger("pathway")
router = APIRouter(tags=["Operations"])


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str | None = None) -> None:
    """JSON logs on stderr at ``level`` (default: PATHWAY_LOG_LEVEL, else INFO), for
    Pathway and for uvicorn."""
    level = level or os.environ.get("PATHWAY_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    # uvicorn's own messages (a worker process that died and was replaced, say) as well
    for name in ("pathway", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def settle_heap() -> None:
    """Call once a serving process has built its application, before it serves: what exists
    then lives as long as the process, so the cyclic collector stops walking it (gc.freeze),
    and it runs less often (every 10,000 allocations, not 700). A request allocates thousands
    of objects; collections that walked the application's hundreds of thousands of objects
    cost 8-15 % of the CPU a consent decision took."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own.

    When ``pathway serve`` runs several processes it names a directory in
    PROMETHEUS_MULTIPROC_DIR before starting them; each then keeps its counts
    there and any of them can report the sum.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pathway_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pathway_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format, summed over all serving processes."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestMiddleware:
    """Gives each request an id, logs it as JSON and counts it (plain ASGI: cheap)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(elapsed)
            if self.access_log:
                log.info(
                    "request",
                    extra={"fields": {"request_id": request_id, "method": scope["method"], "route": path, "status": status, "ms": round(elapsed * 1000, 2)}},
                )


class BodyTimeout(Exception):
    """The request body did not arrive in time."""


class BodyDeadline:
    """Answers 408 (an OperationOutcome, then closes the connection) when a request's body
    has not wholly arrived within ``seconds`` of the request's start (``ingest_seconds``
    for raw extracts under ``/ingest/``), so a slow sender cannot hold a connection and a
    worker for ever (plain ASGI around ``receive``)."""

    def __init__(self, app: ASGIApp, seconds: float, ingest_seconds: float) -> None:
        self.app, self.seconds, self.ingest_seconds = app, seconds, ingest_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seconds = self.ingest_seconds if scope["path"].startswith("/ingest/") else self.seconds
        deadline = asyncio.get_running_loop().time() + seconds
        body_complete = timed_out = started = False

        async def receive_by_deadline() -> Message:
            nonlocal body_complete, timed_out
            if body_complete:  # later receives wait for a disconnect, which may take as long as it takes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyTimeout from None
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal started
            if timed_out:  # whatever the application made of a body cut short gives way to the 408
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_by_deadline, send_unless_timed_out)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            refusal = FhirError(408, f"the request body did not arrive within {seconds:g} seconds", "timeout", headers={"Connection": "close"})
            await error_response(refusal)(scope, receive, send)


@router.get("/healthz", summary="Liveness and database check", responses={503: {"description": "The database cannot be reached"}})
def healthz(request: Request) -> Response:
    try:
        with get_gateway(request).engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return JSONResponse({"status": "unavailable", "database": str(exc.__class__.__name__)}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def _from_this_machine(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", summary="Prometheus metrics (from this machine, or with the metrics scope or ig-officer role)", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    if not _from_this_machine(request):
        who = await principal(request)
        if "metrics" not in who.scopes and "ig-officer" not in who.roles:
            raise FhirError(403, "metrics need a token with the metrics scope or the ig-officer role", "forbidden")
    figures = await asyncio.to_thread(request.app.state.metrics.exposition)
    return Response(figures + await asyncio.to_thread(_agreement_figures, request), media_type=CONTENT_TYPE_LATEST)


def _agreement_figures(request: Request) -> bytes:
    """Agreements due for review, overdue and lapsed, read from the database at each scrape."""
    with request.app.state.gateway.reading() as session:
        return agreement_metrics.exposition(session, now_utc().date())
