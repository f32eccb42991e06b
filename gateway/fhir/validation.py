"""Validation of resources entering Pathway, with errors that name the element.

The R4B models coerce in lax mode ("yes" becomes true, "2" becomes 2) and pydantic's
``strict=True`` does not reach their primitive validators, so before the model sees the body
every value's JSON type is checked against the type of its element (read once per model from
its fields): a value the model would have to coerce is refused. The models do not check value
sets either, so codes of the required bindings partners use are checked against
``REQUIRED_CODES``. What is stored is the body as validated, without nulls and empty values
(FHIR JSON has none). Checking types this way, instead of comparing with the parsed model
dumped back, saves the dump: about two thirds of the cost of validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway.fhir.outcomes import FhirError, issue

_GENDER = frozenset({"male", "female", "other", "unknown"})
_REQUEST_STATUS = frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"})
_REQUEST_INTENT = frozenset(
    {"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}
)
_EVENT_STATUS = frozenset(
    {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
)
_NAME_USE = frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"})
_IDENTIFIER_USE = frozenset({"usual", "official", "temp", "secondary", "old"})
_TELECOM_SYSTEM = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_TELECOM_USE = frozenset({"home", "work", "temp", "old", "mobile"})
_PERSON = {"gender": _GENDER, "name.use": _NAME_USE, "identifier.use": _IDENTIFIER_USE, "telecom.system": _TELECOM_SYSTEM, "telecom.use": _TELECOM_USE}

# Codes of required bindings (FHIR R4) on the elements partners send, by type and path.
REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "Patient": _PERSON,
    "RelatedPerson": _PERSON,
    "Practitioner": _PERSON,
    "Task": {
        "status": frozenset(
            {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
        ),
        "intent": frozenset({"unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}),
        "priority": frozenset({"routine", "urgent", "asap", "stat"}),
    },
    "ServiceRequest": {"status": _REQUEST_STATUS, "intent": _REQUEST_INTENT, "priority": frozenset({"routine", "urgent", "asap", "stat"})},
    "CarePlan": {"status": _REQUEST_STATUS, "intent": frozenset({"proposal", "plan", "order", "option"})},
    "MedicationRequest": {
        "status": frozenset({"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}),
        "intent": frozenset({"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}),
    },
    "MedicationStatement": {
        "status": frozenset({"active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"})
    },
    "Observation": {
        "status": frozenset({"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"})
    },
    "Encounter": {
        "status": frozenset({"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"})
    },
    "EpisodeOfCare": {"status": frozenset({"planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"})},
    "QuestionnaireResponse": {"status": frozenset({"in-progress", "completed", "amended", "entered-in-error", "stopped"})},
    "Communication": {"status": _EVENT_STATUS, "priority": frozenset({"routine", "urgent", "asap", "stat"})},
    "Consent": {"status": frozenset({"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"})},
    "Bundle": {"type": frozenset({"document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset", "collection"})},
}


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
    """Check a resource strictly against FHIR R4 (R4B models); returns what was validated.

    400 when it is not a resource of the expected type or a value has the wrong JSON
    type; 422 naming each bad element when its content does not
    conform (undefined elements, invalid dates, codes outside a required binding).
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
    resource = _without_empties(resource)
    _check_json_types(resource, model, resource_type)
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
    _check_codes(resource, resource_type)
    return resource


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), "null")


def _without_empties(value: Any) -> Any:
    """The body without nulls, empty strings, objects and arrays, which FHIR JSON never has."""
    if isinstance(value, dict):
        kept = {k: _without_empties(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != "" and v != {} and v != []}
    if isinstance(value, list):
        kept_items = [_without_empties(v) for v in value]
        return [v for v in kept_items if v is not None and v != "" and v != {} and v != []]
    return value


@dataclass(frozen=True)
class _Element:
    kind: str  # the JSON type its values take: boolean, number, string, object, or "" (not checked)
    repeats: bool
    model: str | None  # the model of an object value ("*" for a resource named by its resourceType)


def _element(annotation: Any) -> _Element:
    repeats = False
    while True:
        origin = get_origin(annotation)
        if origin is Union or origin is UnionType:
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        elif origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is list:
            repeats, annotation = True, get_args(annotation)[0]
        else:
            break
    if annotation is bool:
        return _Element("boolean", repeats, None)
    if annotation in (int, float, Decimal):
        return _Element("number", repeats, None)
    if annotation in (str, date, datetime, time, bytes):
        return _Element("string", repeats, None)
    name = getattr(annotation, "__name__", "")
    if name.endswith("Type") and name != "Type":
        return _Element("object", repeats, "*" if name == "ResourceType" else name.removesuffix("Type"))
    return _Element("", repeats, None)


@lru_cache(maxsize=None)
def _elements(model: Any) -> dict[str, _Element]:
    """Each element of a model by its JSON name."""
    return {field.alias or name: _element(field.annotation) for name, field in model.model_fields.items()}


def _check_json_types(value: dict[str, Any], model: Any, where: str) -> None:
    """400 for any value whose JSON type is not its element's (the model would coerce it)."""
    elements = _elements(model)
    for key, item in value.items():
        element = elements.get(key)
        if element is None:
            continue  # undefined elements are the model's to refuse
        path = f"{where}.{key}"
        if element.repeats:
            if not isinstance(item, list):
                raise FhirError(400, f"{path}: must be a JSON array, not the JSON {_kind(item)} {orjson.dumps(item).decode()[:40]}", "structure", path)
            for index, entry in enumerate(item):
                _check_value(entry, element, f"{path}[{index}]")
        else:
            _check_value(item, element, path)


def _check_value(value: Any, element: _Element, where: str) -> None:
    if element.kind and _kind(value) != element.kind:
        raise FhirError(400, f"{where}: must be a JSON {element.kind}, not the JSON {_kind(value)} {orjson.dumps(value).decode()[:40]}", "structure", where)
    if element.model is None or not isinstance(value, dict):
        return
    name = value.get("resourceType") if element.model == "*" else element.model
    try:
        model = _model(name) if isinstance(name, str) else None
    except (KeyError, ValueError, AttributeError, ImportError):
        model = None  # an unknown resource type: the model refuses it
    if model is not None:
        _check_json_types(value, model, where)


def _check_codes(resource: dict[str, Any], resource_type: str) -> None:
    for path, codes in REQUIRED_CODES.get(resource_type, {}).items():
        for where, value in _values(resource, path.split("."), resource_type):
            if value not in codes:
                raise FhirError(422, f"{where}: {value!r} is not a code of its required value set ({', '.join(sorted(codes))})", "code-invalid", where)


def _values(node: Any, steps: list[str], where: str) -> list[tuple[str, Any]]:
    """(path, value) of every value at ``steps`` below ``node``, through arrays."""
    if isinstance(node, list):
        return [found for index, item in enumerate(node) for found in _values(item, steps, f"{where}[{index}]")]
    if not steps:
        return [(where, node)]
    if not isinstance(node, dict) or steps[0] not in node:
        return []
    return _values(node[steps[0]], steps[1:], f"{where}.{steps[0]}")


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    parts = [resource_type]
    for part in loc:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif part != "__root__":
            parts.append(str(part))
    return ".".join(parts)
