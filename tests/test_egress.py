"""Webhook endpoints whose names resolve inward: the delivery worker resolves each endpoint's
name once per connection, refuses it when any address is internal (loopback only where allowed),
and connects to the checked address with the name kept for Host and TLS. Names are resolved by
an injected resolver (no DNS in the tests); the receivers are real sockets on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from gateway.delivery.egress import is_internal
from gateway.delivery.models import DeliveryRow, SubscriptionRow
from gateway.delivery.outbox import queue_notice
from gateway.delivery.worker import DeliveryWorker
from gateway.runtime import Gateway
from gateway.store.repository import now_utc
from tests.conftest import FACILITY
from tests.test_delivery import Receiver
from tests.test_pathway_e2e import Parties, conf, conf_client, parties  # noqa: F401  (fixtures)
from tests.test_subscriptions import SETTINGS, inbox, jwks, quiet, status_of, subscription  # noqa: F401  (fixtures)


@pytest.mark.parametrize(
    ("address", "internal", "internal_with_loopback"),
    [
        ("10.0.0.5", True, True),
        ("172.16.3.4", True, True),
        ("192.168.1.20", True, True),
        ("169.254.169.254", True, True),
        ("100.64.0.1", True, True),  # shared (carrier-grade NAT) space
        ("0.0.0.0", True, True),
        ("224.0.0.251", True, True),
        ("fd00::1", True, True),
        ("fe80::1%2", True, True),
        ("::ffff:10.1.2.3", True, True),
        ("127.0.0.1", True, False),
        ("127.8.9.10", True, False),
        ("::1", True, False),
        ("::ffff:127.0.0.1", True, False),
        ("93.184.216.34", False, False),
        ("2606:4700:4700::1111", False, False),
    ],
)
def test_internal_addresses(address: str, internal: bool, internal_with_loopback: bool) -> None:
    assert is_internal(address, allow_loopback=False) is internal
    assert is_internal(address, allow_loopback=True) is internal_with_loopback


class Resolver:
    """Answers each name from a table, and counts the questions."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.asked = answers, []  # type: ignore[var-annotated]

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers[host]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that only counts connections (none is ever accepted)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def _worker(gateway: Gateway, app: Any, resolver: Resolver, clock: Any) -> DeliveryWorker:
    return DeliveryWorker(gateway, app.state.fhir.policy, settings=SETTINGS, threads=1, clock=clock, resolve=resolver)


@pytest.mark.parametrize("address", ["10.0.0.5", "127.0.0.1"])
def test_a_partners_endpoint_whose_name_resolves_inward_is_refused_once_without_connecting(
    gateway: Gateway, app: Any, quiet: Parties, listener: socket.socket, clock: Any, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(gateway, "settings", dataclasses.replace(gateway.settings, loopback_subscriptions=False))
    port = listener.getsockname()[1]
    endpoint = f"https://hooks.tayview-house.example:{port}/notify"
    created = quiet.facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
    assert created.status_code == 201, created.text  # the literal host looks public: accepted
    sub_id = created.json()["id"]
    resolver = Resolver({"hooks.tayview-house.example": ["93.184.216.34", address]})  # one inward address is enough
    worker = _worker(gateway, app, resolver, clock)
    try:
        assert worker.run_once() == 1  # the handshake
        clock.advance(seconds=3600)
        assert worker.run_once() == 0  # dead at once: not retried
    finally:
        worker.close()
    reason = f"not sent: the endpoint's name resolves to an internal address {address}"
    with gateway.reading() as session:
        [handshake] = session.scalars(select(DeliveryRow).where(DeliveryRow.subscription_id == sub_id)).all()
        row = session.get(SubscriptionRow, sub_id)
    assert (handshake.status, handshake.attempts, handshake.last_error) == ("dead", 1, reason)
    assert (row.status, row.last_error) == ("error", reason)
    assert resolver.asked == [("hooks.tayview-house.example", port)]
    assert _connections(listener) == 0
    # what the partner reads back says that and nothing more
    status = status_of(quiet.facility.get(f"Subscription/{sub_id}/$status").json())
    assert status["status"]["valueCode"] == "error"
    assert status["error"]["valueCodeableConcept"]["text"] == reason


def test_loopback_is_for_the_demo_and_the_operator_not_other_internal_ranges(gateway: Gateway, app: Any, listener: socket.socket, clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With loopback refused for partners, the operator's conf/ webhook may still name this host;
    no one's may name a private range."""
    monkeypatch.setattr(gateway, "settings", dataclasses.replace(gateway.settings, loopback_subscriptions=False))
    port = listener.getsockname()[1]
    resolver = Resolver({"relay.hscp.example": ["127.0.0.1"], "relay.internal.example": ["10.20.30.40"]})
    queued = {}
    with gateway.transaction() as session:
        for sub_id, host, owner in (("op-loop", "relay.hscp.example", None), ("partner-loop", "relay.hscp.example", "rehab-facility"), ("op-private", "relay.internal.example", None)):
            row = SubscriptionRow(id=sub_id, recipient=FACILITY, event="review", endpoint=f"http://{host}:{port}/{sub_id}", active=True, created=now_utc(), events_queued=0, owner_client=owner)
            session.add(row)
            session.flush()
            queued[sub_id] = queue_notice(session, row, "handshake")
    worker = _worker(gateway, app, resolver, clock)
    try:
        worker.run_once()
    finally:
        worker.close()
    with gateway.reading() as session:
        errors = {sub_id: session.get(DeliveryRow, delivery_id).last_error for sub_id, delivery_id in queued.items()}
    assert errors["partner-loop"] == "not sent: the endpoint's name resolves to an internal address 127.0.0.1"
    assert errors["op-private"] == "not sent: the endpoint's name resolves to an internal address 10.20.30.40"
    # the operator's loopback webhook was connected to (the listener never answers: a timeout)
    assert errors["op-loop"] == "no answer within 2 s"
    assert _connections(listener) == 1


def test_the_connection_goes_to_the_resolved_address_with_the_names_host_header(gateway: Gateway, app: Any, inbox: Receiver, clock: Any) -> None:  # noqa: F811
    """A real receiver on 127.0.0.1 (loopback allowed, as in the tests and the demo) reached
    through a name that only the injected resolver knows."""
    port = int(inbox.url.rsplit(":", 1)[1].split("/")[0])
    resolver = Resolver({"inbox.tayview-house.test": ["127.0.0.1"]})
    with gateway.transaction() as session:
        row = SubscriptionRow(id="named", recipient=FACILITY, event="facility-referral", endpoint=f"http://inbox.tayview-house.test:{port}/notify", active=True, created=now_utc(), events_queued=0, status="requested", owner_client="rehab-facility")
        session.add(row)
        session.flush()
        queued = queue_notice(session, row, "handshake")
    worker = _worker(gateway, app, resolver, clock)
    try:
        assert worker.run_once() == 1
    finally:
        worker.close()
    with gateway.reading() as session:
        assert session.get(DeliveryRow, queued).status == "delivered"
        assert session.get(SubscriptionRow, "named").status == "active"
    assert list(inbox.accepted) == [queued]
    assert inbox.headers["Host"] == f"inbox.tayview-house.test:{port}"
    assert resolver.asked == [("inbox.tayview-house.test", port)]


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    moment = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=5)).not_valid_after(moment + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False).sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_goes_to_the_resolved_address_with_the_names_sni_and_its_certificate_is_verified(gateway: Gateway, app: Any, clock: Any, tmp_path: Path) -> None:
    """A TLS server on 127.0.0.1 with a self-signed certificate for the name: the handshake
    names the endpoint's host (SNI), and the certificate is checked against the trust store,
    so an untrusted one fails the delivery (to be retried) rather than being accepted."""
    name = "hooks.tayview-house.test"
    cert, key = _self_signed(tmp_path, name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[str | None] = []
    context.sni_callback = lambda _sock, server_name, _ctx: seen.append(server_name)  # type: ignore[assignment,func-returns-value]
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with gateway.transaction() as session:
        row = SubscriptionRow(id="tls", recipient=FACILITY, event="facility-referral", endpoint=f"https://{name}:{port}/notify", active=True, created=now_utc(), events_queued=0, status="requested", owner_client="rehab-facility")
        session.add(row)
        session.flush()
        queued = queue_notice(session, row, "handshake")
    worker = _worker(gateway, app, Resolver({name: ["127.0.0.1"]}), clock)
    try:
        worker.run_once()
    finally:
        worker.close()
        thread.join(timeout=10)
        server.close()
    assert seen == [name]
    with gateway.reading() as session:
        delivery = session.get(DeliveryRow, queued)
    assert delivery.status == "pending" and "CERTIFICATE_VERIFY_FAILED" in (delivery.last_error or ""), delivery.last_error
