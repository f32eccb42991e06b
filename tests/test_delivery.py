"""Push deliveries over real HTTP: a receiver on 127.0.0.1 checks every signature with the
gateway's published JWKS and counts idempotency keys."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select, update

from gateway.audit.chain import read_event
from gateway.auth.keys import verify_detached
from gateway.cli import main as pathway
from gateway.delivery import drop_pending, enqueue, sync_subscriptions
from gateway.delivery.models import DeliveryRow
from gateway.delivery.notification import TOPIC_BASE
from gateway.conf import Delivery
from gateway.delivery.worker import DeliveryWorker
from gateway.fhir.access import CustodianPolicy
from gateway.runtime import Gateway
from gateway.store.repository import now_utc
from gateway.store.models import AgreementRow, AuditRow, DisclosureRow
from tests.conftest import FACILITY, HSCP, PARTNER

FAST = Delivery(base_delay_seconds=0.01, max_delay_seconds=0.05, max_attempts=60, timeout_seconds=2, lease_seconds=30)
OTHER_FACILITY = f"{PARTNER}|rehab-other-house"

# What the receiver does with one POST: answer with this status, or drop the connection.
Behaviour = Callable[[str], "int | str"]


class Receiver:
    """A subscriber's endpoint: verifies signatures, remembers what it accepted (by key)."""

    def __init__(self, jwks: dict[str, Any], behaviour: Behaviour = lambda _key: 200, delay: float = 0.0, port: int = 0) -> None:
        self.jwks, self.behaviour, self.delay = jwks, behaviour, delay
        self.posts: Counter[str] = Counter()
        self.accepted: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.overlaps = 0
        self.headers: dict[str, str] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        key = handler.headers["X-Pathway-Delivery"]
        with self._lock:
            self.posts[key] += 1
            self.overlaps += key in self._in_flight
            self._in_flight.add(key)
            self.headers = dict(handler.headers)
        try:
            if self.delay:
                time.sleep(self.delay)
            if not verify_detached(handler.headers["X-Pathway-Signature"], body, self.jwks):
                with self._lock:
                    self.bad_signatures += 1
                self._answer(handler, 401)
                return
            action = self.behaviour(key)
            if action == "drop":
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            if action == 200:
                with self._lock:
                    self.accepted.setdefault(key, orjson.loads(body))  # idempotent: first copy wins
            self._answer(handler, int(action))
        finally:
            with self._lock:
                self._in_flight.discard(key)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks(server: Any) -> dict[str, Any]:
    """The gateway's public keys as a receiver fetches them."""
    return httpx.get(f"{server.url}/.well-known/jwks.json").json()


@pytest.fixture
def receiver(jwks: dict[str, Any]) -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(behaviour: Behaviour = lambda _key: 200, delay: float = 0.0) -> Receiver:
        made.append(Receiver(jwks, behaviour, delay))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def worker(gateway: Gateway) -> Iterator[Callable[..., DeliveryWorker]]:
    made: list[DeliveryWorker] = []

    def make(settings: Delivery = FAST, on: Gateway = gateway, threads: int = 4) -> DeliveryWorker:
        made.append(DeliveryWorker(on, CustodianPolicy(), settings=settings, threads=threads, idle_sleep=0.02))
        return made[-1]

    yield make
    for w in made:
        w.close()


def _facility_task(owner: str = FACILITY) -> dict[str, Any]:
    system, _, value = owner.partition("|")
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "owner": {"identifier": {"system": system, "value": value}},
        "businessStatus": {"text": "residential"},
    }


def _agreement(session: Any, recipient: str) -> None:
    """An active agreement between the HSCP and ``recipient``: under the consent policy a partner
    is sent even the skeleton of a Task naming it only under one (the person gave no consent)."""
    system, _, value = recipient.partition("|")
    ident = f"isa-test-{value}"
    if session.get(AgreementRow, (ident, 1)) is not None:
        return
    body = {
        "id": ident, "version": 1, "title": "Test deliveries", "status": "active", "start": "2020-01-01",
        "parties": [dict(zip(("system", "value"), HSCP.split("|", 1))), {"system": system, "value": value}],
        "purposes": ["CAREMGT"], "categories": ["pathway-progress"], "lawful_basis": ["UK GDPR Art 6(1)(e)"],
    }
    session.add(AgreementRow(id=ident, version=1, status="active", body=orjson.dumps(body).decode(), loaded=now_utc()))


def refer(gateway: Gateway, count: int = 1, event: str = "facility-referral", recipient: str = FACILITY) -> list[str]:
    """Create facility Tasks (and the person, held by the HSCP) under an agreement with the
    recipient and queue their events together."""
    queued = []
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        _agreement(session, recipient)
        if repo.current("Patient", "p1") is None:
            repo.create({"resourceType": "Patient", "id": "p1", "name": [{"family": "Reid"}]}, HSCP)
        for _ in range(count):
            task = repo.create(_facility_task(recipient), HSCP)
            queued += enqueue(
                session, event=event, recipient=recipient, focus=task.reference, patient="Patient/p1",
                purpose="CAREMGT", include=["Patient/p1"],
            )
    return [q.id for q in queued]


def subscribe(gateway: Gateway, url: str, *, recipient: str = FACILITY, events: tuple[str, ...] = ("facility-referral", "withdrawal-notice")) -> None:
    with gateway.transaction() as session:
        sync_subscriptions(session, [(recipient, url, list(events))])


def statuses(gateway: Gateway) -> Counter[str]:
    with gateway.reading() as session:
        return Counter(session.scalars(select(DeliveryRow.status)))


def drain(worker: DeliveryWorker, gateway: Gateway, seconds: float = 30) -> None:
    """Run the worker until nothing is pending or sending (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.run_once(limit=100)
        left = statuses(gateway)
        if not left["pending"] and not left["sending"]:
            return
        time.sleep(0.005)
    raise AssertionError(f"deliveries not drained in {seconds} s: {statuses(gateway)}")


def test_facility_referral_arrives_once_signed_with_the_published_key(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    endpoint = receiver()
    subscribe(gateway, endpoint.url)
    [delivery_id] = refer(gateway)

    assert worker().run_once() == 1

    assert endpoint.posts == Counter({delivery_id: 1})
    assert endpoint.bad_signatures == 0
    assert endpoint.headers["Content-Type"] == "application/fhir+json"
    bundle = endpoint.accepted[delivery_id]
    Bundle.model_validate(bundle)  # a valid R4 Bundle
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    params = {p["name"]: p for p in status["parameter"]}
    assert params["topic"]["valueCanonical"] == TOPIC_BASE + "facility-referral"
    assert params["events-since-subscription-start"]["valueString"] == "1"
    task_ref = {p["name"]: p for p in params["notification-event"]["part"]}["focus"]["valueReference"]["reference"]
    # The facility sees the Task that names it, not the person's record held by the HSCP.
    assert [e["request"]["url"] for e in bundle["entry"][1:]] == [task_ref]
    with gateway.reading() as session:
        row = session.get(DeliveryRow, delivery_id)
        disclosures = [read_event(session, a) for a in session.scalars(select(AuditRow).where(AuditRow.action == "disclose"))]
    assert (row.status, row.attempts, row.last_error) == ("delivered", 1, None)
    assert row.delivered_at is not None
    [audit] = disclosures
    assert audit["outcome"] == "0"
    assert {"identifier": {"system": PARTNER, "value": "rehab-tayview-house"}} in [a["who"] for a in audit["agent"]]
    assert f"{task_ref}/_history/1" in [e["what"]["reference"] for e in audit["entity"]]


def test_recipients_without_a_subscription_pull_instead(gateway: Gateway) -> None:
    assert refer(gateway, recipient=OTHER_FACILITY) == []
    assert statuses(gateway) == Counter()


def test_deliveries_commit_with_the_change_or_not_at_all(gateway: Gateway, receiver) -> None:  # type: ignore[no-untyped-def]
    subscribe(gateway, receiver().url)
    with pytest.raises(RuntimeError), gateway.transaction() as session:
        enqueue(session, event="facility-referral", recipient=FACILITY, focus="Task/t1", patient="Patient/p1", purpose="CAREMGT")
        raise RuntimeError("the stage move failed")
    assert statuses(gateway) == Counter()


def test_flaky_receiver_gets_every_delivery_exactly_once(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    chance = random.Random(7)
    endpoint = receiver(lambda _key: chance.choices([200, 500, "drop"], [0.6, 0.3, 0.1])[0])
    subscribe(gateway, endpoint.url)
    queued = refer(gateway, count=200)

    drain(worker(), gateway)

    assert statuses(gateway) == Counter({"delivered": 200})
    assert set(endpoint.accepted) == set(queued)
    assert sum(endpoint.posts.values()) > 200  # failures really happened and were retried
    assert endpoint.bad_signatures == 0 and endpoint.overlaps == 0


def test_a_refusal_is_dead_at_once(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    endpoint = receiver(lambda _key: 422)
    subscribe(gateway, endpoint.url)
    [delivery_id] = refer(gateway)

    worker().run_once()

    with gateway.reading() as session:
        row = session.get(DeliveryRow, delivery_id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "HTTP 422" in row.last_error
    assert sum(endpoint.posts.values()) == 1


def test_too_many_requests_waits_as_long_as_the_receiver_asks(gateway: Gateway, jwks, worker) -> None:  # type: ignore[no-untyped-def]
    def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "120"})

    subscribe(gateway, "http://receiver.invalid/notify")
    [delivery_id] = refer(gateway)
    sender = DeliveryWorker(gateway, CustodianPolicy(), settings=FAST, http=httpx.Client(transport=httpx.MockTransport(busy)))
    try:
        before = time.time()
        sender.run_once()
    finally:
        sender.close()
    with gateway.reading() as session:
        row = session.get(DeliveryRow, delivery_id)
    assert row.status == "pending"
    assert row.next_attempt_at.timestamp() >= before + 120


def test_dead_letters_are_replayed_from_the_command_line(gateway: Gateway, receiver, worker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    failing = {"on": True}
    endpoint = receiver(lambda _key: 503 if failing["on"] else 200)
    subscribe(gateway, endpoint.url)
    [delivery_id] = refer(gateway)
    sender = worker(Delivery(base_delay_seconds=0.01, max_delay_seconds=0.02, max_attempts=3, timeout_seconds=2))

    drain(sender, gateway)
    with gateway.reading() as session:
        row = session.get(DeliveryRow, delivery_id)
    assert (row.status, row.attempts) == ("dead", 3)
    assert "gave up after 3 attempts" in row.last_error and "HTTP 503" in row.last_error
    assert endpoint.posts[delivery_id] == 3

    monkeypatch.setenv("PATHWAY_DATABASE_URL", gateway.settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(gateway.settings.secrets_dir))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert pathway(["deliveries", "replay", "--dead"]) == 1  # asks first; nobody to say yes
    assert statuses(gateway) == Counter({"dead": 1})
    failing["on"] = False
    assert pathway(["deliveries", "replay", "--dead", "--yes"]) == 0
    drain(sender, gateway)

    assert statuses(gateway) == Counter({"delivered": 1})
    assert endpoint.posts[delivery_id] == 4 and delivery_id in endpoint.accepted


def test_dead_letters_are_replayed_by_recipient_event_and_time(gateway: Gateway, receiver, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    with gateway.transaction() as session:
        sync_subscriptions(session, [(FACILITY, receiver().url, ["facility-referral", "withdrawal-notice"]), (OTHER_FACILITY, receiver().url, ["facility-referral"])])
    ours = refer(gateway, count=2)
    theirs = refer(gateway, recipient=OTHER_FACILITY)
    notices = refer(gateway, event="withdrawal-notice")
    with gateway.transaction() as session:
        session.execute(update(DeliveryRow).values(status="dead"))
        later = now_utc() + timedelta(hours=1)
        session.execute(update(DeliveryRow).where(DeliveryRow.id == ours[1]).values(created=later))
    monkeypatch.setenv("PATHWAY_DATABASE_URL", gateway.settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(gateway.settings.secrets_dir))
    by = ["--recipient", FACILITY, "--event", "facility-referral", "--until", later.isoformat()]

    assert pathway(["deliveries", "replay", ours[0], "--recipient", FACILITY]) == 2  # filters choose among dead letters
    assert pathway(["deliveries", "replay", "--dead", "--yes", *by]) == 0
    assert "1 dead deliveries queued again" in capsys.readouterr().out
    with gateway.reading() as session:
        status = {row.id: row.status for row in session.scalars(select(DeliveryRow))}
    assert status == {ours[0]: "pending", ours[1]: "dead", theirs[0]: "dead", notices[0]: "dead"}


def test_replaying_a_queued_delivery_is_refused(gateway: Gateway, receiver, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    subscribe(gateway, receiver().url)
    [delivery_id] = refer(gateway)
    monkeypatch.setenv("PATHWAY_DATABASE_URL", gateway.settings.database_url)
    monkeypatch.setenv("PATHWAY_SECRETS_DIR", str(gateway.settings.secrets_dir))

    assert pathway(["deliveries", "replay", delivery_id]) == 2
    assert "already queued" in capsys.readouterr().err
    assert pathway(["deliveries", "list", "--status", "pending", "--json"]) == 0
    [listed] = orjson.loads(capsys.readouterr().out)
    assert (listed["id"], listed["status"]) == (delivery_id, "pending")


def _two_gateways_send(gateway: Gateway, other: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    endpoint = receiver(delay=0.002)
    subscribe(gateway, endpoint.url)
    queued = refer(gateway, count=300)
    workers = [worker(on=gateway), worker(on=gateway), worker(on=other)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while len(endpoint.accepted) < len(queued) and time.monotonic() < deadline:
        time.sleep(0.02)
    for w in workers:
        w.stop()

    assert statuses(gateway) == Counter({"delivered": 300})
    assert endpoint.posts == Counter({key: 1 for key in queued})  # no key sent twice
    assert endpoint.overlaps == 0


def test_several_workers_never_send_a_delivery_twice(gateway: Gateway, settings, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    other = Gateway.start(settings)  # a second engine: another process's view of the same database
    try:
        _two_gateways_send(gateway, other, receiver, worker)
    finally:
        other.close()


def test_a_recipient_who_may_no_longer_see_the_focus_is_not_sent_it(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    endpoint = receiver()
    subscribe(gateway, endpoint.url)
    [delivery_id] = refer(gateway)
    with gateway.transaction() as session:
        repo = gateway.repository(session)
        row = session.get(DeliveryRow, delivery_id)
        task = repo.read("Task", row.focus.split("/")[1]).resource
        task["owner"] = _facility_task(OTHER_FACILITY)["owner"]  # re-assigned before it was sent
        repo.update(task, HSCP)

    worker().run_once()

    with gateway.reading() as session:
        row = session.get(DeliveryRow, delivery_id)
        ledger = session.scalars(select(DisclosureRow)).all()
    assert row.status == "dropped"
    assert "may no longer see" in row.last_error
    assert endpoint.posts == Counter() and ledger == []


def test_withdrawal_drops_pending_deliveries_but_the_notice_still_goes(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    endpoint = receiver()
    subscribe(gateway, endpoint.url)
    refer(gateway, count=3)
    with gateway.transaction() as session:
        assert drop_pending(session, patient="Patient/p1") == 3
        [notice] = enqueue(
            session, event="withdrawal-notice", recipient=FACILITY, focus="Consent/c1", patient="Patient/p1", purpose="CAREMGT"
        )
        assert drop_pending(session, patient="Patient/p1") == 0

    worker().run_once()

    assert statuses(gateway) == Counter({"dropped": 3, "delivered": 1})
    bundle = endpoint.accepted[notice.id]
    assert len(bundle["entry"]) == 1  # the notice alone: nothing about the person


def test_a_slow_receiver_does_not_hold_up_the_others(gateway: Gateway, receiver, worker) -> None:  # type: ignore[no-untyped-def]
    slow, quick = receiver(delay=1.5), receiver()
    with gateway.transaction() as session:
        sync_subscriptions(session, [(OTHER_FACILITY, slow.url, ["facility-referral"]), (FACILITY, quick.url, ["facility-referral"])])
    refer(gateway, count=2, recipient=OTHER_FACILITY)
    queued = refer(gateway, count=20)
    sender = worker(Delivery(base_delay_seconds=0.01, max_delay_seconds=0.05, timeout_seconds=1, lease_seconds=30), threads=4)
    started = time.monotonic()
    sender.start()
    while len(quick.accepted) < len(queued) and time.monotonic() - started < 10:
        time.sleep(0.01)
    took = time.monotonic() - started
    sender.stop()

    assert set(quick.accepted) == set(queued)
    assert took < 1.0  # the quick receiver was not made to wait for the slow one's timeouts
