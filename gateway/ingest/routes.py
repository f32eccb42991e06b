"""``POST /ingest/{source}`` and ``GET /ingest/quarantine``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from adapters import SOURCES, IngestError
from adapters.common import ForeignRecords
from gateway.auth.tokens import Principal
from gateway.deps import get_gateway, principal, require_special_scope
from gateway.fhir.outcomes import FhirError
from gateway.ingest.pipeline import open_quarantine, pipeline_caller, run_ingest

router = APIRouter(tags=["Ingest"])
MAX_EXTRACT_BYTES = 512 * 1024 * 1024
RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


async def raw_extract(request: Request) -> bytes:
    """The extract as sent (a zip, CSV, JSON or JSON Lines body), refused when too large."""
    if int(request.headers.get("content-length") or 0) > MAX_EXTRACT_BYTES:
        raise FhirError(413, f"extracts larger than {MAX_EXTRACT_BYTES // 1024**2} MB must be split", "too-long")
    body = await request.body()
    if not body:
        raise FhirError(400, "the request body is empty; send the extract itself", "required")
    return body


@router.post("/ingest/{source}", summary="Ingest a raw extract; answers the ingest report", openapi_extra=RAW_BODY)
def ingest(
    request: Request, source: str, dry_run: bool = False, who: Principal = Depends(principal), body: bytes = Depends(raw_extract)
) -> Response:
    # A plain function: FastAPI runs it in a worker thread, so a large extract does not hold up the event loop.
    require_special_scope(who, "ingest")
    if source not in SOURCES:
        raise FhirError(404, f"unknown source {source!r}; expected one of {', '.join(SOURCES)}", "not-supported")
    gateway = get_gateway(request)
    try:
        report = run_ingest(gateway, request.app.state.fhir, source, body, caller=pipeline_caller(who.client_id, who.organization), dry_run=dry_run)
    except ForeignRecords as error:
        raise FhirError(422, f"the {source} extract was refused: {error}", "security") from None
    except IngestError as error:
        raise FhirError(422, f"the {source} extract could not be read: {error}", "structure") from None
    return Response(orjson.dumps(report), media_type="application/json")


@router.get("/ingest/quarantine", summary="Records held back from ingest, with their reasons")
def quarantine(request: Request, who: Principal = Depends(principal)) -> Response:
    if "ingest" not in who.scopes and "ig-officer" not in who.roles:
        raise FhirError(403, "needs the ingest scope or the ig-officer role", "forbidden")
    gateway = get_gateway(request)
    with gateway.reading() as session:
        entries = open_quarantine(session, None if "ig-officer" in who.roles else who.organization)
    return Response(orjson.dumps({"quarantined": entries}), media_type="application/json")
