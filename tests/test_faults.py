"""Faults, each bounded in time: a gateway process killed with deliveries in flight, the
database connection lost in the middle of a write, PostgreSQL stopped and restarted under
load, and a receiver that takes 10 s to answer.

The PostgreSQL tests run a throwaway cluster of their own (initdb in a temporary directory,
on another port) so they can stop and start it; they run when PATHWAY_TEST_DATABASE_URL
names PostgreSQL and the server binaries are installed, and are skipped on SQLite runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select, text

from gateway.delivery import sync_subscriptions
from gateway.delivery.models import DeliveryRow
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.store.models import AuditRow, ConfDocumentRow, ResourceRow
from gateway.store.repository import now_utc
from tests.conftest import HSCP, REPO, LiveServer, free_port
from tests.test_delivery import OTHER_FACILITY, Receiver, refer, statuses
from tests.test_delivery import jwks, receiver  # noqa: F401 - fixtures

FACILITY = "https://pathway.scot/Id/partner|rehab-tayview-house"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# --- a real `pathway serve` process --------------------------------------------------------------


def fast_delivery_conf(gateway: Gateway, **delivery: float) -> None:
    """pathway.yaml as shipped, with quick retries and short leases so a crash is noticed in seconds."""
    conf = yaml.safe_load((REPO / "conf" / "pathway.yaml").read_text())
    conf["delivery"] = {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2, "max_attempts": 50, "timeout_seconds": 2, "lease_seconds": 4, **delivery}
    body = yaml.safe_dump(conf)
    with gateway.transaction() as session:
        session.add(ConfDocumentRow(name="pathway.yaml", version=99, sha256=hashlib.sha256(body.encode()).hexdigest(), body=body, loaded=now_utc()))


class ServeProcess:
    """``pathway serve`` (with its delivery worker) as a child process that can be killed and restarted."""

    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PATHWAY_DATABASE_URL": settings.database_url,
            "PATHWAY_SECRETS_DIR": str(settings.secrets_dir),
            "PATHWAY_RUN_WORKERS": "1",
            "PATHWAY_LOG_LEVEL": "ERROR",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port), "--workers", str(self.workers)]
        log = open(os.environ.get("PATHWAY_FAULTS_LOG", os.devnull), "ab")
        self.process = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("pathway serve did not answer /healthz within 30 s")

    def kill(self) -> None:
        """SIGKILL to the gateway and any worker processes: no clean shutdown, no chance
        to record what was in flight."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def serve(settings: Settings) -> Iterator[ServeProcess]:
    process = ServeProcess(settings)
    yield process
    if process.process is not None and process.process.poll() is None:
        process.kill()


def _errors(gateway: Gateway) -> list[str]:
    with gateway.reading() as session:
        return sorted(set(session.scalars(select(DeliveryRow.last_error).where(DeliveryRow.last_error.is_not(None)))))[:3]


def wait_for(condition: Callable[[], bool], seconds: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what()} within {seconds} s")
        time.sleep(0.02)


def test_killed_gateway_restarts_and_delivers_everything_once(gateway: Gateway, serve: ServeProcess, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint: Receiver = receiver(delay=0.02)
    fast_delivery_conf(gateway)
    with gateway.transaction() as session:
        sync_subscriptions(session, [(FACILITY, endpoint.url, ["facility-referral"])])
    queued = refer(gateway, count=200)

    serve.start()
    wait_for(lambda: len(endpoint.accepted) >= 40, 20, lambda: f"deliveries did not arrive ({statuses(gateway)}, {_errors(gateway)}, {sum(endpoint.posts.values())} posts, {endpoint.bad_signatures} bad signatures)")
    serve.kill()  # with sends in flight: claimed, maybe posted, not recorded
    at_kill = len(endpoint.accepted)
    assert at_kill < len(queued), "everything was delivered before the kill; the test proved nothing"
    serve.start()
    wait_for(lambda: statuses(gateway)["delivered"] == len(queued), 40, lambda: f"not every delivery was recorded as delivered ({statuses(gateway)}, {_errors(gateway)})")

    assert set(endpoint.accepted) == set(queued)  # every event arrived; by idempotency key each once
    resent = [key for key, posts in endpoint.posts.items() if posts > 1]
    assert len(resent) <= 64, resent  # only what was in flight at the kill was posted again
    # A POST cut off by the kill reaches the receiver truncated and fails its signature check.
    assert endpoint.bad_signatures <= len(resent) + 64 and endpoint.overlaps == 0


def test_a_receiver_that_takes_10_seconds_does_not_hold_up_the_others(gateway: Gateway, serve: ServeProcess, receiver) -> None:  # type: ignore[no-untyped-def]
    slow, quick = receiver(delay=10), receiver()
    fast_delivery_conf(gateway, timeout_seconds=15, lease_seconds=60)
    with gateway.transaction() as session:
        sync_subscriptions(session, [(OTHER_FACILITY, slow.url, ["facility-referral"]), (FACILITY, quick.url, ["facility-referral"])])
    refer(gateway, count=3, recipient=OTHER_FACILITY)
    queued = refer(gateway, count=30)

    serve.start()
    started = time.monotonic()
    wait_for(lambda: len(quick.accepted) == len(queued), 5, lambda: f"the quick receiver waited behind the slow one ({statuses(gateway)})")
    assert time.monotonic() - started < 5
    assert sum(slow.posts.values()) >= 1 and not slow.accepted  # the slow ones really were in flight


# --- the database lost in the middle of a request ----------------------------------------------------


class LoseConnectionAfterFirstWrite:
    """A write hook that cuts the request's database connection after its first resource is written."""

    def __init__(self, on_cut: Callable[[], None] | None = None) -> None:
        self.armed = False
        self.on_cut = on_cut

    def before_write(self, ctx: Any, resource: dict[str, Any], previous: Any) -> None:
        pass

    def after_write(self, ctx: Any, stored: Any, previous: Any) -> None:
        if self.armed:
            self.armed = False
            if self.on_cut:
                self.on_cut()
            else:
                ctx.session.connection().connection.dbapi_connection.close()


def _two_patients() -> dict[str, Any]:
    entries = [
        {"resource": {"resourceType": "Patient", "name": [{"family": family}]}, "request": {"method": "POST", "url": "Patient"}}
        for family in ("First", "Second")
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _count(gateway: Gateway, model: Any, **where: str) -> int:
    with gateway.reading() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.scalar(query) or 0


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert int(response.headers["Retry-After"]) > 0


def test_connection_lost_mid_transaction_gives_503_and_writes_nothing(gateway: Gateway, app, server, make_client) -> None:  # type: ignore[no-untyped-def]
    cut = LoseConnectionAfterFirstWrite()
    app.state.fhir.hooks.append(cut)
    client = make_client("social-work", HSCP)
    client.token()  # (issuing it is audited)
    audit_before = _count(gateway, AuditRow)

    cut.armed = True
    _assert_unavailable(client.post("", _two_patients()))

    assert not cut.armed  # the cut really happened after the first Patient was written
    assert _count(gateway, ResourceRow, type="Patient") == 0  # nothing of the Bundle was kept
    assert _count(gateway, AuditRow) == audit_before  # nor an audit entry claiming it was
    again = client.post("", _two_patients())  # the pool replaced the connection by itself
    assert again.status_code == 200, again.text
    assert _count(gateway, ResourceRow, type="Patient") == 2


# --- PostgreSQL stopped and restarted -----------------------------------------------------------------


class Cluster:
    """A throwaway PostgreSQL cluster owned by the postgres user, on a port of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=60)

    def create(self) -> None:
        shutil.chown(self.directory, "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not os.environ.get("PATHWAY_TEST_DATABASE_URL", "").startswith("postgresql"):
        pytest.skip("PostgreSQL fault tests run when PATHWAY_TEST_DATABASE_URL names PostgreSQL")
    if not (PG_BIN / "pg_ctl").exists() or shutil.which("runuser") is None:
        pytest.skip(f"needs the PostgreSQL server binaries in {PG_BIN} and runuser")
    directory = Path(tempfile.mkdtemp(prefix="pathway-pg-"))  # outside pytest's root-only tree: postgres must reach it
    made = Cluster(directory)
    made.create()
    made.start()
    yield made
    try:
        made.stop("immediate")
    except subprocess.CalledProcessError:
        pass  # already stopped by the test
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_gateway(cluster: Cluster, tmp_path: Path) -> Iterator[Gateway]:
    started = Gateway.start(Settings(database_url=cluster.url, secrets_dir=tmp_path / "secrets", conf_dir=REPO / "conf", run_workers=False))
    yield started
    started.close()


@pytest.fixture
def pg_server(pg_gateway: Gateway) -> Iterator[tuple[Any, LiveServer]]:
    from gateway.app import create_app

    app = create_app(gateway=pg_gateway)
    with LiveServer(app, free_port()) as live:
        yield app, live


def _pg_client(pg_gateway: Gateway, live: LiveServer):  # type: ignore[no-untyped-def]
    from gateway.auth.clients import credentials, new_client_key, register_client
    from gateway.client import PathwayClient

    key = new_client_key()
    with pg_gateway.transaction() as session:
        client = register_client(session, "social-work", HSCP, ["system/*.read", "system/*.write"], public_keys=[key.public_jwk])
        return PathwayClient(credentials(client, key, live.url))


def test_postgres_stopped_mid_request_gives_503_and_keeps_nothing(cluster: Cluster, pg_gateway: Gateway, pg_server) -> None:  # type: ignore[no-untyped-def]
    app, live = pg_server
    client = _pg_client(pg_gateway, live)
    cut = LoseConnectionAfterFirstWrite(on_cut=lambda: cluster.stop("immediate"))
    app.state.fhir.hooks.append(cut)

    cut.armed = True
    _assert_unavailable(client.post("", _two_patients()))
    _assert_unavailable(client.get("Patient"))  # still down: refused plainly, not a 500
    assert httpx.get(f"{live.url}/healthz").status_code == 503

    cluster.start()
    assert httpx.get(f"{live.url}/healthz").status_code == 200
    assert _count(pg_gateway, ResourceRow, type="Patient") == 0
    assert client.post("", _two_patients()).status_code == 200


def test_postgres_restart_under_load_recovers_without_manual_steps(cluster: Cluster, pg_gateway: Gateway, pg_server) -> None:  # type: ignore[no-untyped-def]
    _app, live = pg_server
    client = _pg_client(pg_gateway, live)
    token = client.token()
    outcomes: Counter[int] = Counter()
    not_outcomes: list[str] = []
    created: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(base_url=f"{live.url}/fhir", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/Patient", content=b'{"resourceType": "Patient", "name": [{"family": "Load"}]}')
                with lock:
                    outcomes[response.status_code] += 1
                    if response.status_code == 201:
                        created.append(response.json()["id"])
                    elif response.json().get("resourceType") != "OperationOutcome":
                        not_outcomes.append(response.text[:200])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    cluster.stop("fast")
    time.sleep(1)
    cluster.start()
    restarted = sum(outcomes.values())
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert set(outcomes) <= {201, 503}, outcomes  # while it was down: 503, never a 500
    assert outcomes[503] > 0, "the restart was not noticed; the test proved nothing"
    assert sum(outcomes.values()) - restarted > 20, "requests did not recover after the restart"
    assert not not_outcomes
    with pg_gateway.reading() as session:
        kept = session.execute(text("SELECT count(*) FROM resource WHERE type = 'Patient'")).scalar()
    assert kept == len(created)  # every 201 is stored; no 503 left anything behind
