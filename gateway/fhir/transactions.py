"""Transaction Bundles: ids for new resources, references between entries, and each
entry applied through the service's ordinary writes (conditional ones included)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gateway.fhir import bundles
from gateway.fhir.conditional import one_match, parse_if_match
from gateway.fhir.outcomes import FhirError
from gateway.fhir.validation import validate_resource
from gateway.store.repository import Stored

if TYPE_CHECKING:
    from gateway.fhir.service import FhirService, WriteContext


def entries_of(bundle: Any) -> list[Any]:
    """The entries of a valid transaction Bundle (400/422 otherwise)."""
    validate_resource(bundle, "Bundle")
    if bundle.get("type") != "transaction":
        raise FhirError(400, "only Bundles of type transaction are accepted here", "not-supported", "Bundle.type")
    return list(bundle.get("entry", []))


def apply(service: FhirService, ctx: WriteContext, entries: list[Any]) -> list[dict[str, Any]]:
    """Apply every entry in ``ctx``'s transaction; the response entries, in order.
    An error names the entry it comes from."""
    found: dict[int, Stored] = {}
    targets: dict[str, str] = {}
    for index, entry in enumerate(entries):
        with _naming_entry(index):
            _assign_id(service, ctx, entry, index, found, targets)
    responses = []
    for index, entry in enumerate(entries):
        with _naming_entry(index):
            stored = found.get(index) or _apply_entry(service, ctx, entry, targets)
            responses.append(_response(stored, index in found))
    return responses


@contextmanager
def _naming_entry(index: int) -> Iterator[None]:
    """Prefix the diagnostics of an error raised within with ``Bundle.entry[index]``."""
    try:
        yield
    except FhirError as error:
        error.issues[0]["diagnostics"] = f"Bundle.entry[{index}]: {error.issues[0]['diagnostics']}"
        raise


def _assign_id(service: FhirService, ctx: WriteContext, entry: Any, index: int, found: dict[int, Stored], targets: dict[str, str]) -> None:
    """Give a POST entry a server id, or (``ifNoneExist``) the one resource it names, and map
    its fullUrl (``urn:uuid:...``) to that reference."""
    if not isinstance(entry, dict):
        raise FhirError(400, "each entry must be an object with a request (and, except for DELETE, a resource)", "structure")
    request, resource = entry.get("request") or {}, entry.get("resource")
    if request.get("method") != "POST" or not isinstance(resource, dict):
        return
    condition = request.get("ifNoneExist")
    match = one_match(ctx.session, ctx.repo, service.policy, ctx.caller, str(resource.get("resourceType")), condition) if condition else None
    if match is not None:
        service.audit_found(ctx, match, disclosed=False)
        found[index] = match.stored
        reference = match.stored.reference
    else:
        resource["id"] = str(uuid.uuid4())
        reference = f"{resource.get('resourceType')}/{resource['id']}"
    if entry.get("fullUrl"):
        targets[entry["fullUrl"]] = reference


def _apply_entry(service: FhirService, ctx: WriteContext, entry: dict[str, Any], targets: dict[str, str]) -> Stored | None:
    request = entry.get("request") or {}
    method, url = request.get("method"), str(request.get("url", ""))
    if_match = parse_if_match(request.get("ifMatch"))
    if method == "DELETE":
        resource_type, _, resource_id = url.partition("/")
        return service.delete_in(ctx, resource_type, resource_id, if_match)
    resource = _resolve_references(entry.get("resource"), targets)
    if method not in ("POST", "PUT") or not isinstance(resource, dict):
        raise FhirError(400, "each entry needs request.method POST, PUT or DELETE and (except DELETE) a resource", "structure")
    path, _, condition = url.partition("?")
    resource = validate_resource(resource, path.split("/")[0] or None)
    if method == "POST":
        return service.write(ctx, resource, if_match=if_match)
    if condition:
        return service.conditional_put_in(ctx, resource, condition, if_match).stored
    return service.put_in(ctx, resource, if_match)


def _response(stored: Stored | None, found: bool) -> dict[str, Any]:
    if stored is None or stored.deleted:
        return {"response": {"status": "204 No Content"}}
    status = "200 OK" if found or stored.version_id > 1 else "201 Created"
    return {
        "response": {
            "status": status,
            "location": f"{stored.type}/{stored.id}/_history/{stored.version_id}",
            "etag": bundles.etag(stored.version_id),
        }
    }


def _resolve_references(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (targets.get(v, v) if k == "reference" and isinstance(v, str) else _resolve_references(v, targets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_references(v, targets) for v in value]
    return value
