"""The FHIR REST API under ``/fhir``: thin routes over :class:`FhirService`.

The routes are coroutines that call the store directly: each request's
database work is short and runs to completion without yielding, so running it
on the event loop saves a thread hand-off per request (measured here as the
largest cost per request). Reads await only their audit entry's group commit.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gateway.deps import base_url, caller, json_body, require_scope
from gateway.fhir import bundles
from gateway.fhir.access import Caller
from gateway.fhir.capability import capability_statement
from gateway.fhir.conditional import Written, parse_if_match
from gateway.fhir.outcomes import FHIR_JSON, FhirError, fhir_response, issue, operation_outcome
from gateway.fhir.search import strict_handling
from gateway.fhir.service import FhirService

router = APIRouter(prefix="/fhir", tags=["FHIR"])
# The SMART v2 permission each transaction entry method needs (create, update, delete).
ENTRY_MODES = {"POST": "c", "PUT": "u", "DELETE": "d"}
MAX_VERSION = 2**31 - 1  # versions are stored as 32-bit integers
RESOURCE_BODY = {
    "requestBody": {
        "required": True,
        "content": {FHIR_JSON: {"schema": {"type": "object"}}, "application/json": {"schema": {"type": "object"}}},
    }
}
PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}


async def _writing(request: Request) -> tuple[Caller, Any, FhirService]:
    """A write's caller, its parsed body and the service. Taken in the route, not as
    FastAPI dependencies, so the route is plain (gateway/plain_routes.py); the caller is
    authenticated before the body is read."""
    who = await caller(request)
    return who, await json_body(request), request.app.state.fhir


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def _prefer_return(request: Request) -> str:
    """The ``return`` preference of a ``Prefer`` header (RFC 7240): minimal,
    representation (the default) or OperationOutcome."""
    for preference in request.headers.get("prefer", "").replace(";", ",").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "return" and value.strip().strip('"') in ("minimal", "OperationOutcome"):
            return value.strip().strip('"')
    return "representation"


def _written(request: Request, written: Written) -> Response:
    """A write's answer as ``Prefer: return=`` asks: the resource, nothing, or an OperationOutcome."""
    stored = written.stored
    headers = {
        "Location": f"{base_url(request)}/fhir/{stored.type}/{stored.id}/_history/{stored.version_id}",
        "ETag": bundles.etag(stored.version_id),
        "Last-Modified": _http_date(stored.last_updated),
    }
    prefer = _prefer_return(request)
    if prefer == "minimal":
        return Response(status_code=written.status, headers=headers)
    if prefer == "OperationOutcome" or written.hidden:
        what = "created" if written.status == 201 else "found (not created)" if written.found else "updated"
        what += "; this organisation may no longer see it" if written.hidden else ""
        body: Any = operation_outcome([issue(f"{stored.reference} {what}, version {stored.version_id}", "informational", "information")])
        return fhir_response(body, written.status, headers)
    return fhir_response(written.resource if written.resource is not None else stored.raw, written.status, headers)


def _resource_response(request: Request, resource: dict[str, Any]) -> Response:
    """A read's answer with its validators; 304 without a body when the client's copy
    (``If-None-Match``, else ``If-Modified-Since``) is current."""
    version = int(resource["meta"]["versionId"])
    modified = datetime.fromisoformat(resource["meta"]["lastUpdated"]).astimezone(timezone.utc)
    headers = {"ETag": bundles.etag(version), "Last-Modified": _http_date(modified)}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(",")}
        if "*" in tags or str(version) in tags:
            return Response(status_code=304, headers=headers)
    elif _not_modified_since(request.headers.get("if-modified-since"), modified):
        return Response(status_code=304, headers=headers)
    return fhir_response(resource, headers=headers)


def _not_modified_since(header: str | None, modified: datetime) -> bool:
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an invalid date is ignored (RFC 9110 13.1.3)
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return modified.replace(microsecond=0) <= since


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(base_url(request)))


@router.post("", summary="Transaction Bundle", openapi_extra=RESOURCE_BODY)
async def transaction(request: Request) -> Response:
    who, body, fhir = await _writing(request)
    for entry in _transaction_entries(body):
        request_part = entry.get("request", {})
        url = request_part.get("url", "")
        mode = ENTRY_MODES.get(str(request_part.get("method")), "cud")
        if "?" in url or request_part.get("ifNoneExist"):
            mode += "s"  # a conditional entry searches first
        require_scope(who.principal, url.split("?")[0].split("/")[0] or "Bundle", mode)
    return fhir_response(fhir.transaction(who, body, base_url(request)))


def _transaction_entries(body: Any) -> list[dict[str, Any]]:
    """A transaction Bundle's entries, each an object whose request (if any) is an object
    with a string url; 400 naming the first that is not (the service validates the rest)."""
    entries = body.get("entry", []) if isinstance(body, dict) else []
    if not isinstance(entries, list):
        raise FhirError(400, "Bundle.entry must be an array", "structure", "Bundle.entry")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FhirError(400, f"Bundle.entry[{index}] must be an object", "structure", f"Bundle.entry[{index}]")
        request = entry.get("request", {})
        if not isinstance(request, dict):
            raise FhirError(400, f"Bundle.entry[{index}].request must be an object", "structure", f"Bundle.entry[{index}].request")
        if not isinstance(request.get("url", ""), str):
            raise FhirError(400, f"Bundle.entry[{index}].request.url must be a string", "structure", f"Bundle.entry[{index}].request.url")
    return entries


@router.get("/{resource_type}", summary="Search")
async def search(request: Request, resource_type: str) -> Response:
    who = await caller(request)  # not a dependency: on the hottest routes FastAPI's solving cost more than the call
    require_scope(who.principal, resource_type, "s")
    return await _search(request, resource_type, list(request.query_params.multi_items()), who, request.app.state.fhir)


@router.post("/{resource_type}/_search", summary="Search (parameters in a form body and/or the query string)")
async def search_by_post(request: Request, resource_type: str) -> Response:
    who, fhir = await caller(request), request.app.state.fhir
    require_scope(who.principal, resource_type, "s")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") and await request.body():
        raise FhirError(415, "POST _search takes application/x-www-form-urlencoded parameters", "not-supported")
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return await _search(request, resource_type, list(request.query_params.multi_items()) + form, who, fhir)


async def _search(request: Request, resource_type: str, params: list[tuple[str, str]], who: Caller, fhir: FhirService) -> Response:
    strict = strict_handling(request.headers.get("prefer"))
    return fhir_response(await fhir.search(who, resource_type, params, base_url(request), strict=strict))


@router.post("/{resource_type}", status_code=201, summary="Create", openapi_extra=RESOURCE_BODY)
async def create(request: Request, resource_type: str) -> Response:
    who, body, fhir = await _writing(request)
    require_scope(who.principal, resource_type, "cs" if request.headers.get("if-none-exist") or request.query_params else "c")
    # The condition comes in If-None-Exist or, as fhirpy's get_or_create sends it, in the query string.
    condition = request.headers.get("if-none-exist") or request.url.query or None
    return _written(request, fhir.conditional_create(who, body, resource_type, condition))


@router.get("/{resource_type}/{resource_id}", summary="Read")
async def read(request: Request, resource_type: str, resource_id: str) -> Response:
    who = await caller(request)  # not a dependency: on the hottest routes FastAPI's solving cost more than the call
    require_scope(who.principal, resource_type, "r")
    return _resource_response(request, await request.app.state.fhir.read(who, resource_type, resource_id))


@router.put("/{resource_type}/{resource_id}", summary="Update (or create with the given id)", openapi_extra=RESOURCE_BODY, responses={201: {"description": "Created with the id given"}})
async def update(request: Request, resource_type: str, resource_id: str) -> Response:
    who, body, fhir = await _writing(request)
    require_scope(who.principal, resource_type, "u")
    return _written(request, fhir.update(who, body, resource_type, resource_id, parse_if_match(request.headers.get("if-match"))))


@router.put("/{resource_type}", summary="Conditional update (PUT {type}?identifier=...)", openapi_extra=RESOURCE_BODY)
async def conditional_update(request: Request, resource_type: str) -> Response:
    who, body, fhir = await _writing(request)
    require_scope(who.principal, resource_type, "us")
    if_match = parse_if_match(request.headers.get("if-match"))
    return _written(request, fhir.conditional_update(who, body, resource_type, request.url.query, if_match))


@router.patch("/{resource_type}/{resource_id}", summary="JSON Patch", openapi_extra=PATCH_BODY)
async def patch(request: Request, resource_type: str, resource_id: str) -> Response:
    who, body, fhir = await _writing(request)
    require_scope(who.principal, resource_type, "u")
    return _written(request, fhir.patch(who, resource_type, resource_id, body, parse_if_match(request.headers.get("if-match"))))


@router.delete("/{resource_type}/{resource_id}", status_code=204, summary="Delete")
async def delete(request: Request, resource_type: str, resource_id: str) -> Response:
    who, fhir = await caller(request), request.app.state.fhir
    require_scope(who.principal, resource_type, "d")
    fhir.delete(who, resource_type, resource_id, parse_if_match(request.headers.get("if-match")))
    return Response(status_code=204)


@router.get("/{resource_type}/{resource_id}/_history", summary="History of a resource")
async def history(request: Request, resource_type: str, resource_id: str) -> Response:
    who, fhir = await caller(request), request.app.state.fhir
    require_scope(who.principal, resource_type, "r")
    return fhir_response(await fhir.history(who, resource_type, resource_id, base_url(request)))


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="Read a version")
async def vread(
    request: Request,
    resource_type: str,
    resource_id: str,
    version_id: int = Path(ge=1, le=MAX_VERSION),
) -> Response:
    who, fhir = await caller(request), request.app.state.fhir
    require_scope(who.principal, resource_type, "r")
    return _resource_response(request, await fhir.vread(who, resource_type, resource_id, version_id))
