"""Conditional create and update: which resource a search query names, for this caller.

What the caller may not see counts as not there: otherwise a conditional create would
tell a caller that someone it may know nothing about exists (no existence oracle, see
docs/architecture.md "Who may say what"). The price, accepted: a caller who cannot see
a Patient may create a second Patient with the same CHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from gateway.fhir.access import AccessPolicy, Caller
from gateway.fhir.outcomes import FhirError
from gateway.fhir.search import matches, parse_search
from gateway.sharing.skeleton import visible_matches
from gateway.store.repository import Repository, Stored

CHUNK = 20
PAGING_PARAMS = frozenset({"_count", "_offset", "_format", "_total"})


@dataclass
class Written:
    """A write's answer: the version stored (or found) and the HTTP status; ``resource`` is
    the caller's view when it is not the version as stored (a resource found rather than
    written, or a record the caller does not hold), ``hidden`` when the caller may not see it."""

    stored: Stored
    status: int
    resource: dict[str, Any] | None = None
    hidden: bool = False
    found: bool = False


@dataclass
class Match:
    """The one resource a condition found, as the caller may see it."""

    stored: Stored
    resource: dict[str, Any]
    disclosures: list[dict[str, Any]]


def one_match(session: Session, repo: Repository, policy: AccessPolicy, caller: Caller, resource_type: str, condition: str) -> Match | None:
    """The single current resource the search ``condition`` (``identifier=system|value``...)
    finds among what the caller may see; None when there is none; 412 when there are several."""
    params = [(k, v) for k, v in parse_qsl(condition.lstrip("?"), keep_blank_values=True) if k not in PAGING_PARAMS]
    if not params:
        raise FhirError(400, f"a conditional {resource_type} interaction needs search criteria, e.g. identifier=system|value", "invalid")
    query = parse_search(resource_type, params, strict=True)  # an ignored criterion would widen the match
    rows = matches(repo, resource_type, query, policy.search_custodians(caller, resource_type))
    found: list[Stored] = []
    while len(found) < 2 and (chunk := [stored for _, stored in islice(rows, CHUNK)]):
        shown = visible_matches(policy, session, caller, chunk, query).resources
        found += [stored for stored, resource in zip(chunk, shown) if resource is not None]
    if len(found) > 1:
        raise FhirError(412, f"the condition {condition!r} matches more than one {resource_type}; make it more selective", "multiple-matches")
    if not found:
        return None
    visible = policy.visible(session, caller, found)
    assert visible.resources[0] is not None  # seen a moment ago in this transaction
    return Match(found[0], visible.resources[0], visible.disclosures)


def parse_if_match(value: Any) -> int | None:
    """The version in an ``If-Match`` ETag (``W/"3"``, ``"3"`` or ``3``)."""
    if value in (None, ""):
        return None
    text = str(value).removeprefix("W/").strip('"')
    if not text.isdigit():
        raise FhirError(400, f"If-Match {value!r} is not a version ETag like W/\"3\"", "value")
    return int(text)
