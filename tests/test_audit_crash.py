"""A ``pathway serve`` killed with SIGKILL while answering consent decisions loses no
acknowledged decision's audit record, and its chain still verifies (group commit: a
decision is answered only once the batch holding its entry is committed)."""

from __future__ import annotations

import http.client
import threading
import time

import orjson

from gateway.audit.chain import AuditRow, read_event, verify
from gateway.auth.clients import credentials, new_client_key, register_client
from gateway.client import PathwayClient
from gateway.runtime import Gateway
from tests.conftest import ALL_SCOPES, HSCP
from tests.test_faults import ServeProcess, serve  # noqa: F401 - fixture

CONNECTIONS = 8


def _decide(port: int, token: str, name: str, acknowledged: list[str], failed: list[str], stop: threading.Event) -> None:
    """Ask decisions on one keep-alive connection, each with a purpose of its own, until the
    server goes away; note each purpose answered 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    n = 0
    while not stop.is_set():
        purpose = f"crash-{name}-{n}"
        body = {"patient": [{"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}], "actor": [{"system": "x", "value": "y"}],
                "purpose": purpose, "data": {"categories": ["demographics"], "security": [], "classes": ["Patient"], "codes": []}}
        try:
            connection.request("POST", "/consent/$decide", body=orjson.dumps(body), headers=headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            failed.append(purpose)  # in flight when the server died: answered or not, nothing was promised
            return
        if response.status == 200:
            acknowledged.append(purpose)
        n += 1


def _purposes(gateway: Gateway) -> set[str]:
    with gateway.reading() as session:
        events = [read_event(session, row) for row in session.query(AuditRow).order_by(AuditRow.seq)]
    return {c["code"] for e in events for p in e.get("purposeOfEvent", []) for c in p["coding"]}


def test_acknowledged_decisions_keep_their_audit_records_through_kill_9(gateway: Gateway, serve: ServeProcess) -> None:  # noqa: F811
    key = new_client_key()
    with gateway.transaction() as session:
        client = register_client(session, "crash-decider", HSCP, [*ALL_SCOPES, "consent.decide"], public_keys=[key.public_jwk])
    serve.start()
    token = PathwayClient(credentials(client, key, serve.url)).token()

    acknowledged: list[str] = []
    failed: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_decide, args=(serve.port, token, str(i), acknowledged, failed, stop)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    serve.kill()  # SIGKILL with all connections mid-request
    stop.set()
    for thread in threads:
        thread.join(timeout=20)

    assert len(acknowledged) >= 300, f"only {len(acknowledged)} decisions answered in 30 s"
    assert failed, "no request was in flight at the kill"
    recorded = _purposes(gateway)
    lost = [p for p in acknowledged if p not in recorded]
    assert lost == [], f"{len(lost)} acknowledged decisions have no audit record, e.g. {lost[:3]}"
    with gateway.reading() as session:
        report = verify(session)
    assert report.ok, report.broken
    assert report.checked >= len(acknowledged)

    # The restarted gateway appends to the same chain, which still holds end to end.
    serve.start()
    connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
    body = orjson.dumps({"patient": [{"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}], "actor": [], "purpose": "crash-after",
                         "data": {"categories": [], "security": [], "classes": ["Patient"], "codes": []}})
    connection.request("POST", "/consent/$decide", body=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert "crash-after" in _purposes(gateway)
    with gateway.reading() as session:
        assert verify(session).ok
