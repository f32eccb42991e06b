"""Property-based fuzzing of every operation in the running gateway's OpenAPI (schemathesis).

Each operation gets a fixed, derandomised budget of generated requests, valid and invalid,
sent with a real access token to a real server on 127.0.0.1. The server must never answer
5xx, every answer must match what the OpenAPI says (status code, content type, body
schema), and every 4xx must be an OperationOutcome. Failures from all operations are
collected and reported together.

    PATHWAY_FUZZ_EXAMPLES=200 .venv/bin/pytest tests/test_fuzz_api.py   # a deeper run
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance

from tests.conftest import HSCP, LiveServer
from tests.test_sharing import partnership  # noqa: F401 - fixture: the demo directory and agreements

EXAMPLES = int(os.environ.get("PATHWAY_FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SCOPES = ["system/*.read", "system/*.write", "audit.read", "consent.decide", "break-glass", "ingest"]


def refusals_are_operation_outcomes(response: requests.Response) -> str | None:
    """Every 4xx explains itself as an OperationOutcome (the token endpoint's OAuth errors carry one too)."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} with a body that is not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome" or not body.get("issue"):
        return f"{response.status_code} without an OperationOutcome: {response.text[:200]!r}"
    return None


@pytest.fixture(name="settings")
def settings_with_api_docs(settings):  # type: ignore[no-untyped-def]
    """The conftest settings with the OpenAPI description published (it is off by default)."""
    return dataclasses.replace(settings, expose_api_docs=True)


@pytest.fixture
def fuzz_target(partnership, server: LiveServer, make_client) -> Iterator[tuple[Any, dict[str, str]]]:  # type: ignore[no-untyped-def]
    client = make_client("fuzzer", HSCP, SCOPES, roles=["ig-officer", "break-glass"])
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    yield schema, {"Authorization": f"Bearer {client.token()}"}


def _fuzz(operation: Any, mode: Any, base_url: str, headers: dict[str, str], session: requests.Session) -> list[str]:
    """Send ``EXAMPLES`` generated requests for one operation; returns what went wrong."""
    problems: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), **headers}
        response = case.call(base_url=base_url, session=session, timeout=30)
        found: list[str] = []
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            found += [f"{f.title}: {f.message}" for f in group.exceptions]
        except Failure as failure:
            found.append(f"{failure.title}: {failure.message}")
        outcome = refusals_are_operation_outcomes(response)
        found += [outcome] if outcome else []
        problems.extend(f"{operation.label}: {problem}\n    {response.status_code} for {case.as_curl_command()[:400]}" for problem in found)

    try:
        run()
    except Unsatisfiable:
        assert mode is schemathesis.GenerationMode.NEGATIVE, f"{operation.label}: no valid request can be generated"
        # an operation without parameters or body has no invalid requests to make
    return problems


def test_every_operation_survives_fuzzing(fuzz_target, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    schema, headers = fuzz_target
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    problems: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                problems += _fuzz(operation, mode, server.url, headers, session)
    first_of_each = {p.split("\n", 1)[0]: p for p in reversed(problems)}
    assert not problems, f"{len(problems)} failing requests, {len(first_of_each)} distinct:\n" + "\n".join(first_of_each.values())
