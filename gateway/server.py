"""Running the gateway: uvicorn plus the background duties of a gateway.

With one worker, ``pathway serve`` answers requests and runs the background
duties and the delivery worker in one process. With several, uvicorn starts
that many request-serving processes on the same socket and this process
supervises them (restarting any that die) and does the background work, so
HTTP and delivery use separate cores. Processes share nothing but the
database: the audit chain head and delivery leases are locked there, consent
decisions are cached by the versions they depend on, and console sessions are
stored rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
from functools import partial
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.app import create_app, fhir_service
from gateway.audit.chain import seal
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.outcomes import FHIR_JSON, issue, operation_outcome
from gateway.fhir.service import FhirService
from gateway.ops import MULTIPROCESS_ENV, configure_logging, settle_heap
from gateway.pathway.overdue import raise_overdue_reviews
from gateway.pathway.top import raise_overdue_top_reviews
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.sharing import agreement_lifecycle
from gateway.store.repository import now_utc

log = logging.getLogger("pathway")
SEAL_INTERVAL_SECONDS = 60.0
_HEADERS_LATE = orjson.dumps(operation_outcome([issue("the request headers did not arrive in time", "timeout")]))
_HEADERS_LATE_RESPONSE = (
    f"HTTP/1.1 408 Request Timeout\r\ncontent-type: {FHIR_JSON}\r\nconnection: close\r\ncontent-length: {len(_HEADERS_LATE)}\r\n\r\n".encode()
    + _HEADERS_LATE
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's headers, which uvicorn
    lacks: a connection that has not sent a complete request head within
    ``header_timeout`` seconds of opening (or of the previous response) is answered 408
    and closed, so slow or half-sent headers cannot hold connections open."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._cycle_before: object = None  # the request cycle there was when the wait began
        self._partial_head = False  # some of a request head has come, not all of it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._cycle_before:  # a request head is complete
            self._stop_waiting()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._partial_head = True

    def on_headers_complete(self) -> None:
        self._partial_head = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._await_headers()  # first: a pipelined request may start inside
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._cycle_before = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.cycle is not self._cycle_before or busy or self.transport.is_closing():
            return
        if self._partial_head:
            self.transport.write(_HEADERS_LATE_RESPONSE)
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the gateway: Pathway's JSON logs instead of uvicorn's, no
    Server header, and the request header deadline."""
    return {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "http": partial(HeaderDeadlineProtocol, header_timeout=settings.header_timeout),
    }


class BackgroundDuties:
    """Periodic work of a gateway: sealing the audit chain head, flagging reviews that are
    past due, activating signed agreements that have started and recording lapses."""

    def __init__(self, gateway: Gateway, fhir: FhirService, interval: float = SEAL_INTERVAL_SECONDS) -> None:
        self.gateway, self.fhir, self.interval = gateway, fhir, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pathway-duties", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.gateway.transaction() as session:
                    seal(session, self.gateway.signing_key)
                raise_overdue_reviews(self.fhir)
                with self.gateway.transaction() as session:
                    agreement_lifecycle.sweep(session, now_utc().date())
                raise_overdue_top_reviews(self.fhir)
            except Exception:  # noqa: BLE001 - a failed round is logged and retried next interval
                log.exception("background duties failed; retrying next interval")


def worker_app() -> FastAPI:
    """The application of one request-serving process (uvicorn's factory; settings from
    the environment ``serve`` passes on, database already migrated)."""
    configure_logging()
    app = create_app(gateway=Gateway.start(Settings.from_env(), run_migrations=False))
    settle_heap()
    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the gateway until interrupted, from ``settings.workers`` processes."""
    configure_logging()
    gateway = Gateway.start(settings)
    # One process: the background work shares the application's FHIR service (and its caches).
    app = create_app(gateway=gateway) if settings.workers == 1 else None
    fhir = app.state.fhir if app is not None else fhir_service(gateway)
    duties = BackgroundDuties(gateway, fhir)
    deliveries = DeliveryWorker(gateway, fhir.policy)
    if settings.run_workers:
        duties.start()
        deliveries.start()
    try:
        if app is not None:
            settle_heap()
            uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))
        else:
            _serve_from_processes(settings, host, port)
    finally:
        if settings.run_workers:
            deliveries.stop()
            duties.stop()
        deliveries.close()
        gateway.close()


def _serve_from_processes(settings: Settings, host: str, port: int) -> None:
    """uvicorn's supervisor over ``settings.workers`` processes, which read these settings
    from the environment and keep their metrics in a directory shared for the run."""
    with tempfile.TemporaryDirectory(prefix="pathway-metrics-") as metrics_dir:
        os.environ.update(settings.to_env())
        os.environ[MULTIPROCESS_ENV] = metrics_dir
        uvicorn.run("gateway.server:worker_app", factory=True, workers=settings.workers, host=host, port=port, **uvicorn_options(settings))
