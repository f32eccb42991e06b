"""Plain routes pick the route FastAPI would, answer as FastAPI would, and leave the rest to it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway import plain_routes
from gateway.app import create_app
from gateway.runtime import Gateway

# (method, path): precedence cases (specific routes declared before the generic FHIR
# ones), plain and not-plain routes, partial matches (405) and paths no route has.
REQUESTS = [
    ("GET", "/fhir/Patient/abc"),
    ("GET", "/fhir/Patient"),
    ("GET", "/fhir/metadata"),
    ("GET", "/fhir/Subscription"),
    ("GET", "/fhir/Subscription/abc"),
    ("GET", "/fhir/Subscription/abc/$status"),
    ("GET", "/fhir/MeasureReport"),
    ("GET", "/fhir/AuditEvent"),
    ("GET", "/fhir/Task/abc/$package"),
    ("GET", "/fhir/Patient/abc/_history"),
    ("GET", "/fhir/Patient/abc/_history/1"),
    ("GET", "/fhir/Patient/abc/_history/0"),
    ("POST", "/fhir/Patient"),
    ("POST", "/fhir/Communication/abc/$ack"),
    ("POST", "/consent/$decide"),
    ("GET", "/consent/$decide"),
    ("PATCH", "/fhir/metadata"),
    ("DELETE", "/fhir/Patient"),
    ("GET", "/nowhere"),
    ("GET", "/healthz"),
    ("GET", "/console/"),
]


async def _send(app: Any, method: str, path: str) -> tuple[int, dict[str, Any], bytes]:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/fhir+json"), (b"content-length", b"2")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {},
    }
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(60)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], scope, answer["body"]


def _answers(app: Any) -> list[tuple[int, str | None, str | None, Any]]:
    async def all_requests() -> list[tuple[int, str | None, str | None, Any]]:
        answers = []
        for method, path in REQUESTS:
            status, scope, body = await _send(app, method, path)
            route = scope.get("route")
            outcome = orjson.loads(body).get("issue") if body.startswith(b"{") else None
            answers.append((status, getattr(route, "path", None), getattr(scope.get("endpoint"), "__qualname__", None), outcome))
        return answers

    return asyncio.run(all_requests())


def test_plain_routes_choose_and_answer_as_fastapi_does(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    with_plain = _answers(create_app(gateway=gateway))
    monkeypatch.setattr(plain_routes, "is_plain", lambda route: False)
    without = _answers(create_app(gateway=gateway))
    assert with_plain == without
    chosen = dict(zip(REQUESTS, with_plain))
    # The specific routes declared ahead of the generic FHIR ones keep their requests.
    assert chosen[("GET", "/fhir/Subscription/abc")][1] == "/fhir/Subscription/{subscription_id}"
    assert chosen[("GET", "/fhir/MeasureReport")][1] == "/fhir/MeasureReport"
    assert chosen[("GET", "/fhir/Patient/abc")][1] == "/fhir/{resource_type}/{resource_id}"
    # No token: the plain routes' refusal is the application's OperationOutcome.
    assert chosen[("GET", "/fhir/Patient/abc")][0] == 401
    assert chosen[("PATCH", "/fhir/metadata")][0] == 405
    assert chosen[("GET", "/nowhere")][0] == 404


def test_only_routes_needing_nothing_but_their_path_are_plain(gateway: Gateway) -> None:
    app = create_app(gateway=gateway)
    plain = {(method, route.path) for route in _routes(app) if plain_routes.is_plain(route) for method in route.methods}
    # Every FHIR interaction but vread (whose version FastAPI checks is a whole number in range)
    # and the Subscription routes (which take their caller as a dependency).
    assert plain == {
        ("POST", "/consent/$decide"),
        ("GET", "/fhir/metadata"),
        ("POST", "/fhir"),
        ("GET", "/fhir/{resource_type}"),
        ("POST", "/fhir/{resource_type}/_search"),
        ("POST", "/fhir/{resource_type}"),
        ("GET", "/fhir/{resource_type}/{resource_id}"),
        ("PUT", "/fhir/{resource_type}/{resource_id}"),
        ("PUT", "/fhir/{resource_type}"),
        ("PATCH", "/fhir/{resource_type}/{resource_id}"),
        ("DELETE", "/fhir/{resource_type}/{resource_id}"),
        ("GET", "/fhir/{resource_type}/{resource_id}/_history"),
    }


def _routes(app: Any) -> list[Any]:
    from gateway.delivery.subscription_routes import router as subscriptions
    from gateway.fhir.routes import router as fhir
    from gateway.sharing.routes import router as sharing

    return [*sharing.routes, *subscriptions.routes, *fhir.routes]
