"""Validation of resources entering Pathway, with errors that name the element."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway.fhir.outcomes import FhirError, issue


@lru_cache(maxsize=None)
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def parse_json(raw: bytes) -> Any:
    """Decode a request body; 400 with the parser's position when it is not JSON."""
    if not raw:
        raise FhirError(400, "request body is empty; a FHIR resource was expected", "required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, f"request body is not valid JSON: {exc}", "structure") from None


def validate_resource(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a resource against the FHIR R4 (R4B models) structure; returns it unchanged.

    400 when it is not a resource of the expected type; 422 naming each bad
    element when its content does not conform.
    """
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise FhirError(400, "body must be a FHIR resource: a JSON object with resourceType", "structure")
    resource_type = resource["resourceType"]
    if expected_type and resource_type != expected_type:
        raise FhirError(400, f"resourceType is {resource_type}, expected {expected_type}", "invalid", "resourceType")
    try:
        model = _model(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        raise FhirError(400, f"{resource_type} is not a FHIR R4 resource type", "not-supported", "resourceType") from None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = [
            issue(
                f"{_path(resource_type, err['loc'])}: {err['msg']}",
                "required" if err["type"] == "missing" else "structure" if err["type"] == "extra_forbidden" else "value",
                expression=_path(resource_type, err["loc"]),
            )
            for err in exc.errors()[:20]
        ]
        raise FhirError(422, issues[0]["diagnostics"], issues=issues) from None
    except (ValueError, TypeError) as exc:
        raise FhirError(422, f"{resource_type}: {exc}", "value") from None
    return resource


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    parts = [resource_type]
    for part in loc:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif part != "__root__":
            parts.append(str(part))
    return ".".join(parts)
