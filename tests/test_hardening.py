"""Operations hygiene over real HTTP: revoked clients, console sign-in throttling, token
audiences and generic refusals, header and body deadlines, malformed input answered 4xx,
and what is published without a token."""

from __future__ import annotations

import dataclasses
import io
import socket
import struct
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select, update

from gateway.app import create_app
from gateway.audit.chain import read_event
from gateway.auth.keys import SigningKey
from gateway.auth.tokens import ASSERTION_TYPE
from gateway.client import client_assertion
from gateway.console.auth import SignInThrottle, save_account
from gateway.console.models import ConsoleSignInThrottleRow
from gateway.runtime import Gateway
from gateway.server import uvicorn_options
from gateway.store.models import AuditRow, ClientRow
from gateway.store.repository import now_utc
from tests.browser.world import Browser
from tests.conftest import HSCP, REPO, LiveServer, free_port

SPECIAL = ["system/*.read", "system/*.write", "ingest", "consent.decide", "audit.read"]
GENERIC_SIGN_IN_REFUSAL = "Sign-in failed"


def _audit_details(gateway: Gateway, words: str) -> list[str]:
    with gateway.reading() as session:
        events = [read_event(session, row) for row in session.scalars(select(AuditRow).order_by(AuditRow.seq))]
    return [e.get("outcomeDesc", "") for e in events if words in e.get("outcomeDesc", "")]


def _token_form(assertion: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}


# 1. a disabled client's token stops working on every route ------------------------------------


def test_a_disabled_clients_token_is_refused_on_every_authenticated_route(server, make_client, gateway) -> None:  # type: ignore[no-untyped-def]
    client = make_client("social-work", HSCP, SPECIAL, roles=["ig-officer"])
    calls = [
        ("GET", f"{server.url}/ingest/quarantine", None),
        ("POST", f"{server.url}/consent/$decide", {"patient": [], "actor": [], "purpose": "TREAT"}),
        ("GET", f"{server.url}/pathway/metrics", None),
        ("GET", "Task/no-such-task/$package", None),
        ("POST", f"{server.url}/ingest/thirdsector?dry_run=true", {"records": []}),
        ("GET", "Patient", None),
    ]
    before = [client.request(method, url, json=body).status_code for method, url, body in calls]
    assert 401 not in before, before
    with gateway.transaction() as session:
        session.execute(update(ClientRow).where(ClientRow.id == "social-work").values(active=False))
    time.sleep(1.1)  # registrations are re-checked at most once a second
    for method, url, body in calls:
        response = client.request(method, url, json=body)
        assert response.status_code == 401, (url, response.text)
        assert response.json()["issue"][0]["diagnostics"] == "the client behind this token is no longer registered"


# 2. console sign-in throttling -------------------------------------------------------------------


@pytest.fixture
def officer(gateway) -> str:  # type: ignore[no-untyped-def]
    """A console account (ig-officer) with a known password."""
    with gateway.transaction() as session:
        save_account(session, "ig-officer", display_name="Morven Laird", organization=HSCP, roles=["ig-officer"], password="the-right-password")
        save_account(session, "lead", display_name="Callum Rennie", organization=HSCP, roles=["partnership-lead"], password="the-lead-password")
    return "the-right-password"


def test_console_sign_in_locks_an_account_after_repeated_failures_in_every_process(server, gateway, settings, officer) -> None:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    for attempt in range(1, 31):
        response = browser.login("ig-officer", f"wrong-{attempt}")
        assert response.status_code == 401 and GENERIC_SIGN_IN_REFUSAL in response.text
    right = browser.login("ig-officer", officer)
    assert right.status_code == 401 and GENERIC_SIGN_IN_REFUSAL in right.text and right.url.path == "/console/login"
    # five failures counted, one lockout, and the 6th to 31st attempts (the right password too) refused unchecked
    assert len(_audit_details(gateway, "console sign-in failed")) == 5
    assert _audit_details(gateway, "console sign-in locked") == ["console sign-in locked for account:ig-officer after repeated failures"]
    assert len(_audit_details(gateway, "is locked")) == 26
    # another serving process on the same database refuses it as well
    second = Gateway.start(settings)
    try:
        with LiveServer(create_app(gateway=second), free_port()) as other:
            assert Browser(other.url).login("ig-officer", officer).status_code == 401
            assert Browser(other.url).login("lead", "the-lead-password").url.path == "/console/"  # other accounts unaffected
    finally:
        second.close()


def test_console_sign_in_locks_an_address_spraying_many_accounts(server, gateway, officer) -> None:  # type: ignore[no-untyped-def]
    browser = Browser(server.url)
    for attempt in range(20):
        assert browser.login(f"guess-{attempt}", "password1").status_code == 401
    assert _audit_details(gateway, "console sign-in locked") == ["console sign-in locked for address:127.0.0.1 after repeated failures"]
    assert browser.login("ig-officer", officer).status_code == 401


def test_a_lockout_ends_after_fifteen_minutes(gateway) -> None:  # type: ignore[no-untyped-def]
    throttle = SignInThrottle()
    with gateway.transaction() as session:
        locked = [throttle.failed(session, "ig-officer", "192.0.2.7") for _ in range(5)]
        assert locked == [[], [], [], [], ["account:ig-officer"]]
        assert throttle.locked(session, "ig-officer", "192.0.2.8") == "account:ig-officer"
        assert throttle.locked(session, "lead", "192.0.2.7") is None  # 5 of the address's 20
        session.execute(update(ConsoleSignInThrottleRow).values(at=now_utc() - timedelta(minutes=15, seconds=1)))
        assert throttle.locked(session, "ig-officer", "192.0.2.7") is None
        assert throttle.failed(session, "ig-officer", "192.0.2.7") == []  # the old failures no longer count
        assert session.scalar(select(func.count()).select_from(ConsoleSignInThrottleRow)) == 2  # expired rows were pruned


# 3 and 7. token audience, generic refusals -----------------------------------------------------


def test_an_assertion_for_another_token_endpoint_is_refused_whatever_the_host_header(server, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("social-work")
    creds = client.credentials
    elsewhere = client_assertion("social-work", "https://other-gateway.example/oauth/token", creds["private_key_pem"], creds["kid"])
    response = httpx.post(f"{server.url}/oauth/token", data=_token_form(elsewhere), headers={"Host": "other-gateway.example"})
    assert response.status_code == 401 and "aud" in response.json()["error_description"]
    for name in ("127.0.0.1", "localhost"):  # the server's own address, as either loopback name
        port = server.url.rsplit(":", 1)[1]
        own = client_assertion("social-work", f"http://{name}:{port}/oauth/token", creds["private_key_pem"], creds["kid"])
        assert httpx.post(f"{server.url}/oauth/token", data=_token_form(own)).status_code == 200


def test_with_a_public_url_only_its_token_endpoint_is_an_audience(gateway, make_client) -> None:  # type: ignore[no-untyped-def]
    creds = make_client("social-work").credentials
    public = dataclasses.replace(gateway.settings, public_url="https://pathway.example/")
    pinned = Gateway.start(public)
    try:
        with LiveServer(create_app(gateway=pinned), free_port()) as live:
            for audience, status in ((f"{live.url}/oauth/token", 401), ("https://pathway.example/oauth/token", 200)):
                assertion = client_assertion("social-work", audience, creds["private_key_pem"], creds["kid"])
                assert httpx.post(f"{live.url}/oauth/token", data=_token_form(assertion)).status_code == status, audience
    finally:
        pinned.close()


def test_token_endpoint_says_the_same_for_an_unknown_client_a_wrong_key_and_a_bad_signature(server, make_client, gateway) -> None:  # type: ignore[no-untyped-def]
    victim, attacker = make_client("social-work"), make_client("attacker")
    url = victim.credentials["token_url"]
    unknown = client_assertion("nobody", url, attacker.credentials["private_key_pem"], attacker.credentials["kid"])
    wrong_key = client_assertion("social-work", url, attacker.credentials["private_key_pem"], victim.credentials["kid"])
    good = client_assertion("social-work", url, victim.credentials["private_key_pem"], victim.credentials["kid"])
    head, payload, signature = good.split(".")
    bad_signature = f"{head}.{payload}.{signature[:-4]}AAAA"
    answers = [httpx.post(f"{server.url}/oauth/token", data=_token_form(a)) for a in (unknown, wrong_key, bad_signature)]
    assert {a.status_code for a in answers} == {401}
    assert len({a.content for a in answers}) == 1, [a.text for a in answers]
    assert answers[0].json()["error"] == "invalid_client" and "Error" not in answers[0].text
    # the audit trail keeps the precise reasons for the IG officer
    reasons = _audit_details(gateway, "token refused")
    assert any("unknown, disabled or keyless client 'nobody'" in r for r in reasons)
    assert sum("signature not accepted" in r for r in reasons) == 2


def test_api_says_one_thing_for_every_kind_of_invalid_token(server, gateway) -> None:  # type: ignore[no-untyped-def]
    now = int(time.time())
    claims = {"sub": "social-work", "org": HSCP, "scope": "system/*.read", "exp": now + 60}
    from joserfc.jwk import ECKey

    foreign_key = SigningKey(ECKey.generate_key("P-384").as_pem(private=True))
    tokens = {
        "garbage": "not-a-token",
        "foreign key": foreign_key.sign_jwt({**claims, "iss": server.url, "aud": server.url}),
        "other issuer": gateway.signing_key.sign_jwt({**claims, "iss": server.url, "aud": "https://elsewhere.example"}),
    }
    texts = {}
    for kind, token in tokens.items():
        response = httpx.get(f"{server.url}/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, kind
        texts[kind] = response.json()["issue"][0]["diagnostics"]
    assert set(texts.values()) == {"access token is not valid"}, texts


# 4. header and body deadlines ----------------------------------------------------------------------


class DeadlineServer(LiveServer):
    """The gateway served as ``pathway serve`` serves it (its uvicorn options), on 127.0.0.1."""

    def __init__(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, port)
        options = uvicorn_options(app.state.gateway.settings)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)


@pytest.fixture
def short_deadlines(settings):  # type: ignore[no-untyped-def]
    return dataclasses.replace(settings, header_timeout=1.0, body_timeout=1.0, ingest_body_timeout=5.0)


@pytest.fixture
def deadline_server(short_deadlines):  # type: ignore[no-untyped-def]
    started = Gateway.start(short_deadlines)
    try:
        with DeadlineServer(create_app(gateway=started), free_port()) as live:
            yield live
    finally:
        started.close()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (at most 5 s of waiting)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_connections_with_half_sent_headers_are_answered_408_and_closed(deadline_server) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    held = [_connect(deadline_server.url) for _ in range(20)]
    for sock in held:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    answers = [_read_all(sock) for sock in held]
    elapsed = time.monotonic() - started
    for sock in held:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b'"code":"timeout"' in a for a in answers), answers[0]
    assert elapsed < 4, elapsed
    # a kept-alive connection gets the same deadline for its next request's headers
    with _connect(deadline_server.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 1")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 408 ") == 1


def test_a_body_sent_too_slowly_is_answered_408_but_extracts_get_longer(deadline_server, make_client) -> None:  # type: ignore[no-untyped-def]
    slow = b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n"
    # without a token the write is refused before its body is waited for
    with _connect(deadline_server.url) as sock:
        sock.sendall(slow + b"\r\n{\"resourceType\"")
        assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
    writer = make_client("writer", HSCP, ["system/*.write"]).token()
    started = time.monotonic()
    with _connect(deadline_server.url) as sock:
        sock.sendall(slow + f"Authorization: Bearer {writer}\r\n\r\n".encode() + b"{\"resourceType\"")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 seconds" in answer, answer
    assert time.monotonic() - started < 4
    # an extract trickling in for two seconds is still read and ingested
    token = make_client("ingester", HSCP, ["ingest"]).token()
    with _connect(deadline_server.url) as sock:
        head = f"POST /ingest/thirdsector?dry_run=true HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        sock.sendall(head.encode() + b"Content-Type: application/json\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        for byte in b"[]  ":
            time.sleep(0.5)
            sock.sendall(bytes([byte]))
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") or answer.startswith(b"HTTP/1.1 422 "), answer


# 5. malformed input is a 4xx OperationOutcome, never a 500 -----------------------------------------


def test_out_of_range_and_malformed_requests_get_4xx_operation_outcomes(server, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("social-work", HSCP, SPECIAL)
    patient = client.post("Patient", {"resourceType": "Patient", "gender": "female"})
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]
    answers = {
        "huge version": client.get(f"Patient/{patient_id}/_history/100000000000000000000000"),
        "version 0": client.get(f"Patient/{patient_id}/_history/0"),
        "entry not an object": client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [1]}),
        "request not an object": client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": 2}]}),
        "url not a string": client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": 5}}]}),
        "entries not a list": client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": {"a": 1}}),
        "year 0": client.get("Patient?_lastUpdated=ge0000-01-01"),
    }
    for what, response in answers.items():
        assert response.status_code in (400, 404, 422), (what, response.status_code, response.text)
        assert response.json()["resourceType"] == "OperationOutcome", what
    # the last instant there is: everything was updated before it, nothing after
    for query, expected in (("le9999-12-31T23:59:59.999999", 1), ("gt9999-12-31T23:59:59.999999", 0), ("ge0001-01-01T00:00:00", 1)):
        bundle = client.get(f"Patient?_lastUpdated={query}&_total=accurate")
        assert bundle.status_code == 200, (query, bundle.text)
        assert len(bundle.json().get("entry", [])) == expected, query


def test_a_decision_request_naming_the_person_by_a_string_is_answered_not_crashed(server, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("social-work", HSCP, SPECIAL)
    response = client.post(f"{server.url}/consent/$decide", {"patient": "0101800002", "actor": [], "purpose": "TREAT"})
    assert response.status_code < 500, response.text
    assert "patient" in response.text  # says what was wrong with it


def _zip_with_a_false_size(folder: Path, liar: str, claimed: int) -> bytes:
    """A zip of ``folder`` whose member ``liar`` claims ``claimed`` bytes uncompressed, in its
    local header and in the central directory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    data = bytearray(buffer.getvalue())
    member = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(liar)
    struct.pack_into("<I", data, member.header_offset + 22, claimed)
    central = data.find(b"PK\x01\x02", member.header_offset)
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == liar.encode():
            struct.pack_into("<I", data, central + 24, claimed)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


def test_an_extract_zip_with_a_false_uncompressed_size_is_refused_with_a_reason(server, make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client("emis-feed", HSCP, ["ingest"])
    body = _zip_with_a_false_size(REPO / "tests" / "fixtures" / "emis" / "extract", "Admin_Patient.csv", 10)
    response = client.request("POST", f"{server.url}/ingest/emis?dry_run=true", content=body, headers={"Content-Type": "application/zip"})
    assert response.status_code == 422, response.text
    assert "Admin_Patient.csv" in response.json()["issue"][0]["diagnostics"]


# 6. what is published without a token ---------------------------------------------------------------


def test_api_docs_are_unpublished_unless_asked_for(server, gateway) -> None:  # type: ignore[no-untyped-def]
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{server.url}{path}").status_code == 404, path
    published = Gateway.start(dataclasses.replace(gateway.settings, expose_api_docs=True))
    try:
        with LiveServer(create_app(gateway=published), free_port()) as live:
            for path in ("/openapi.json", "/docs", "/redoc"):
                assert httpx.get(f"{live.url}{path}").status_code == 200, path
    finally:
        published.close()


def test_metrics_need_this_machine_or_the_metrics_scope(server, make_client) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{server.url}/metrics").status_code == 200  # from 127.0.0.1
    # through a reverse proxy on this machine the caller is the forwarded address
    remote = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(f"{server.url}/metrics", headers=remote).status_code == 401
    partner = make_client("partner", HSCP, ["system/*.read"])
    assert httpx.get(f"{server.url}/metrics", headers={**remote, "Authorization": f"Bearer {partner.token()}"}).status_code == 403
    monitor = make_client("monitor", HSCP, ["metrics"])
    answer = httpx.get(f"{server.url}/metrics", headers={**remote, "Authorization": f"Bearer {monitor.token()}"})
    assert answer.status_code == 200 and "pathway_http_requests_total" in answer.text
    officer = make_client("officer", HSCP, ["audit.read"], roles=["ig-officer"])
    assert httpx.get(f"{server.url}/metrics", headers={**remote, "Authorization": f"Bearer {officer.token()}"}).status_code == 200
