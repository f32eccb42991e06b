"""Running the gateway: uvicorn plus the background duties of a gateway process."""

from __future__ import annotations

import logging
import threading

import uvicorn

from gateway.app import create_app
from gateway.audit.chain import seal
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.service import FhirService
from gateway.pathway.overdue import raise_overdue_reviews
from gateway.ops import configure_logging
from gateway.runtime import Gateway
from gateway.settings import Settings

log = logging.getLogger("pathway")
SEAL_INTERVAL_SECONDS = 60.0


class BackgroundDuties:
    """Periodic work each gateway process shares: sealing the audit chain head and
    flagging reviews that are past due."""

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


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the gateway until interrupted."""
    configure_logging()
    gateway = Gateway.start(settings)
    app = create_app(gateway=gateway)
    duties = BackgroundDuties(gateway, app.state.fhir)
    deliveries = DeliveryWorker(gateway, app.state.fhir.policy)
    if settings.run_workers:
        duties.start()
        deliveries.start()
    try:
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False)
    finally:
        if settings.run_workers:
            deliveries.stop()
            duties.stop()
        deliveries.close()
