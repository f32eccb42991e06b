"""Bundles Pathway answers with: search sets, histories, transaction responses."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from gateway.fhir.outcomes import operation_outcome, withheld_warning
from gateway.store.repository import Stored, fhir_instant, now_utc


PAGING_PARAMS = frozenset({"_offset", "_cursor"})


def full_url(base: str, resource: dict[str, Any]) -> str:
    return f"{base}/fhir/{resource['resourceType']}/{resource['id']}"


def searchset(
    base: str,
    resource_type: str,
    resources: list[dict[str, Any]],
    params: list[tuple[str, str]],
    next_page: list[tuple[str, str]] | None,
    withheld: bool,
    *,
    included: Sequence[dict[str, Any]] = (),
    total: int | None = None,
) -> dict[str, Any]:
    """A searchset page: matches, then included resources, then the "some information withheld"
    outcome, each entry with its ``search.mode``. ``params`` are those applied (the self link);
    ``next_page`` the paging parameters of the next link, if any. ``total`` is given only when
    asked for, and counts only what the caller may see."""
    own = [(k, v) for k, v in params if k not in PAGING_PARAMS]
    links = [{"relation": "self", "url": f"{base}/fhir/{resource_type}?{urlencode(params)}"}]
    if next_page is not None:
        links.append({"relation": "next", "url": f"{base}/fhir/{resource_type}?{urlencode(own + next_page)}"})
    entries: list[dict[str, Any]] = [
        {"fullUrl": full_url(base, r), "resource": r, "search": {"mode": mode}}
        for mode, group in (("match", resources), ("include", included))
        for r in group
    ]
    if withheld:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": operation_outcome([withheld_warning()]),
                "search": {"mode": "outcome"},
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(now_utc())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    return {**bundle, "link": links, "entry": entries}


def history(base: str, versions: list[Stored], resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A history Bundle of the versions the caller may see (newest first): each entry says
    how the version came about (POST, PUT or DELETE); a delete carries no resource."""
    entries = []
    for stored, resource in zip(versions, resources):
        method = "DELETE" if stored.deleted else "POST" if stored.version_id == 1 else "PUT"
        status = "204 No Content" if stored.deleted else "201 Created" if stored.version_id == 1 else "200 OK"
        entry: dict[str, Any] = {
            "fullUrl": full_url(base, resource),
            "request": {"method": method, "url": stored.type if method == "POST" else f"{stored.type}/{stored.id}"},
            "response": {"status": status, "lastModified": fhir_instant(stored.last_updated), "etag": etag(stored.version_id)},
        }
        if not stored.deleted:
            entry["resource"] = resource
        entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history", "entry": entries}


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'
