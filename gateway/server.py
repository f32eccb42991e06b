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

import logging
import os
import tempfile
import threading

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app, fhir_service
from gateway.audit.chain import seal
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.service import FhirService
from gateway.ops import MULTIPROCESS_ENV, configure_logging
from gateway.pathway.overdue import raise_overdue_reviews
from gateway.runtime import Gateway
from gateway.settings import Settings

log = logging.getLogger("pathway")
SEAL_INTERVAL_SECONDS = 60.0
_UVICORN = {"log_config": None, "access_log": False, "server_header": False}


class BackgroundDuties:
    """Periodic work of a gateway: sealing the audit chain head and flagging reviews
    that are past due."""

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
            except Exception:  # noqa: BLE001 - a failed round is logged and retried next interval
                log.exception("background duties failed; retrying next interval")


def worker_app() -> FastAPI:
    """The application of one request-serving process (uvicorn's factory; settings from
    the environment ``serve`` passes on, database already migrated)."""
    configure_logging()
    return create_app(gateway=Gateway.start(Settings.from_env(), run_migrations=False))


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
            uvicorn.run(app, host=host, port=port, **_UVICORN)
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
        uvicorn.run("gateway.server:worker_app", factory=True, workers=settings.workers, host=host, port=port, **_UVICORN)
