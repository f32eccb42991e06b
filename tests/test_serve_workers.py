"""Gateways of several processes: `pathway serve --workers 2` (two request-serving
processes and a supervisor that delivers) and `pathway deliveries work` (an extra
sender), sharing one database with nothing lost, doubled or unchained."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.audit.chain import verify
from gateway.auth.clients import credentials, new_client_key, register_client
from gateway.client import PathwayClient
from gateway.delivery import sync_subscriptions
from gateway.runtime import Gateway
from gateway.settings import Settings
from tests.conftest import ALL_SCOPES, HSCP, REPO
from tests.test_delivery import Receiver, refer, statuses
from tests.test_delivery import jwks, receiver  # noqa: F401 - fixtures
from tests.test_faults import FACILITY, ServeProcess, fast_delivery_conf, wait_for

THREADS, EACH = 6, 10


def workers_of(serve: ServeProcess) -> set[int]:
    """The pids of the request-serving processes the supervising ``pathway serve`` started
    (its other child is multiprocessing's resource tracker)."""
    assert serve.process is not None
    children = Path(f"/proc/{serve.process.pid}/task/{serve.process.pid}/children").read_text().split()
    return {int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


@pytest.fixture
def two_workers(settings: Settings) -> Iterator[ServeProcess]:
    serve = ServeProcess(settings, workers=2)
    yield serve
    if serve.process is not None and serve.process.poll() is None:
        serve.kill()


def _create_and_read(creds: dict, created: list[str], failures: list[str]) -> None:  # type: ignore[type-arg]
    # A client of its own per thread: separate connections, spread over both processes.
    client = PathwayClient(creds)
    try:
        for n in range(EACH):
            made = client.post("Patient", json={"resourceType": "Patient", "name": [{"family": f"Worker{n}"}]})
            if made.status_code != 201:
                failures.append(f"create {made.status_code} {made.text[:200]}")
                continue
            ident = made.json()["id"]
            read = client.get(f"Patient/{ident}")
            if read.status_code != 200 or read.json()["id"] != ident:
                failures.append(f"read {read.status_code}")
            created.append(ident)
    finally:
        client.close()


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_two_serving_processes_share_one_consistent_store(gateway: Gateway, two_workers: ServeProcess, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint: Receiver = receiver()
    fast_delivery_conf(gateway)
    key = new_client_key()
    with gateway.transaction() as session:
        sync_subscriptions(session, [(FACILITY, endpoint.url, ["facility-referral"])])
        client = register_client(session, "two-workers", HSCP, ALL_SCOPES, public_keys=[key.public_jwk])
    two_workers.start()
    assert len(workers_of(two_workers)) == 2
    creds = credentials(client, key, two_workers.url)

    created: list[str] = []
    failures: list[str] = []
    threads = [threading.Thread(target=_create_and_read, args=(creds, created, failures)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == [] and len(set(created)) == THREADS * EACH

    # The supervising process sends what the workers' writes queued.
    queued = refer(gateway, count=5)
    wait_for(lambda: statuses(gateway)["delivered"] == len(queued), 30, lambda: f"deliveries not sent ({statuses(gateway)})")
    assert set(endpoint.accepted) == set(queued)

    # /metrics, answered by either process, counts the requests both served.
    metrics = httpx.get(f"{two_workers.url}/metrics", timeout=5).text
    assert _metric(metrics, "pathway_http_requests_total", method="POST", route="/fhir/{resource_type}", status="201") == THREADS * EACH
    assert _metric(metrics, "pathway_http_requests_total", method="GET", route="/fhir/{resource_type}/{resource_id}", status="200") == THREADS * EACH

    # Both processes appended to one audit chain; it holds end to end.
    with gateway.reading() as session:
        report = verify(session)
    assert report.ok, report.broken
    assert report.checked >= 2 * THREADS * EACH


def test_a_killed_worker_is_replaced_and_the_gateway_keeps_answering(two_workers: ServeProcess) -> None:
    two_workers.start()
    before = workers_of(two_workers)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers_of(two_workers) - before) == 1 and len(workers_of(two_workers)) == 2, 20, lambda: f"no replacement worker ({workers_of(two_workers)})")
    answers = {httpx.get(f"{two_workers.url}/healthz", timeout=5).status_code for _ in range(10)}
    assert answers == {200}


def test_an_extra_sender_process_delivers_and_stops_cleanly_on_sigterm(gateway: Gateway, settings: Settings, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint: Receiver = receiver()
    fast_delivery_conf(gateway)
    with gateway.transaction() as session:
        sync_subscriptions(session, [(FACILITY, endpoint.url, ["facility-referral"])])
    queued = refer(gateway, count=20)
    env = {**os.environ, **settings.to_env(), "PATHWAY_LOG_LEVEL": "ERROR"}
    sender = subprocess.Popen([sys.executable, "-m", "gateway.cli", "deliveries", "work", "--threads", "4"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: statuses(gateway)["delivered"] == len(queued), 30, lambda: f"not delivered ({statuses(gateway)})")
        assert set(endpoint.accepted) == set(queued) and max(endpoint.posts.values()) == 1
    finally:
        sender.send_signal(signal.SIGTERM)
        _out, errors = sender.communicate(timeout=30)
    assert sender.returncode == 0, errors
    assert "sending with 4 threads" in errors
