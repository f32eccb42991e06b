"""OperationOutcome: the one way Pathway says what went wrong (or was withheld)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

FHIR_JSON = "application/fhir+json"
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}


class FhirJSONResponse(JSONResponse):
    """FHIR JSON; routes use it to document their media type (they answer with ``fhir_response``)."""

    media_type = FHIR_JSON


def error_responses(media_types: tuple[str, ...] = (FHIR_JSON,)) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for routes whose refusals and failures are OperationOutcomes."""
    content = {media_type: {"schema": OPERATION_OUTCOME_SCHEMA} for media_type in media_types}
    return {
        "4XX": {"description": "Refused; the OperationOutcome says why", "content": content},
        "5XX": {"description": "Unavailable (try again after Retry-After) or failed; nothing was changed", "content": content},
    }


class FhirError(Exception):
    """An error answered as an OperationOutcome with an HTTP status.

    ``code`` is from the FHIR issue-type value set (invalid, not-found,
    conflict, forbidden, security, processing, business-rule...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "invalid",
        expression: str | None = None,
        issues: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.issues = issues or [issue(message, code, expression=expression)]
        self.headers = headers or {}


def issue(message: str, code: str, severity: str = "error", expression: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if expression:
        entry["expression"] = [expression]
    return entry


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


def withheld_warning() -> dict[str, Any]:
    """The only sign a recipient gets that consent filtering removed something."""
    return issue("some information withheld", "suppressed", severity="warning")


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content=content, status_code=status, media_type=FHIR_JSON, headers=headers)


def error_response(error: FhirError) -> Response:
    return fhir_response(operation_outcome(error.issues), error.status, error.headers)


async def fhir_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return error_response(exc)
