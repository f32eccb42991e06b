"""The skeleton of a workflow record: what an organisation it names may see without consent.

A Task, ServiceRequest or Communication that names an organisation (owner, requester,
performer, sender, recipient) is shown to it in full only when the agreement AND the person's
consent permit it, like any other record. Otherwise, while the record is open and an agreement
between that organisation and the holder is in force (for any purpose), the organisation sees
this skeleton: the elements it needs to run the workflow (who, what kind of task, which state,
when) and nothing clinical (reasons, notes, inputs, payloads, supporting information). Its meta
keeps versionId, lastUpdated and profile: category tags and security labels tell what kind of
data the record holds (substance use, mental health), more than its code does. The skeleton is
tagged SUBSETTED, as FHIR asks of a partial resource. Open means not finished: a Task not
completed, cancelled, rejected, failed or entered-in-error; a ServiceRequest not completed,
revoked or entered-in-error; a Communication not completed (sent) or entered-in-error.

A participant that sees only the skeleton may still update a Task: the elements it cannot see
are carried over from the stored version, and a body that sets one is refused (whatever the
stored version holds, so a refusal tells nothing about it). Nor does a search match a skeleton
on what it leaves out (``visible_matches``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from gateway.fhir.access import AccessPolicy, Caller, Visible
from gateway.fhir.outcomes import FhirError
from gateway.fhir.search import SUBSETTED, SearchQuery
from gateway.store.repository import Stored

# Top-level elements a participant sees of each workflow type without consent.
_COMMON = ("resourceType", "id", "meta", "identifier", "status")
SKELETON_ELEMENTS: dict[str, frozenset[str]] = {
    "Task": frozenset({
        *_COMMON, "statusReason", "businessStatus", "intent", "priority", "code", "for", "focus", "basedOn", "partOf",
        "groupIdentifier", "owner", "requester", "authoredOn", "lastModified", "executionPeriod",
    }),
    "ServiceRequest": frozenset({
        *_COMMON, "intent", "priority", "category", "code", "subject", "basedOn", "replaces", "requisition", "requester",
        "performer", "authoredOn", "occurrenceDateTime", "occurrencePeriod", "occurrenceTiming",
    }),
    "Communication": frozenset({
        *_COMMON, "priority", "subject", "basedOn", "partOf", "inResponseTo", "sender", "recipient", "sent", "received",
    }),
}
# Statuses in which the workflow is over: then nothing is shown without consent.
CLOSED_STATUSES: dict[str, frozenset[str]] = {
    "Task": frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"}),
    "ServiceRequest": frozenset({"completed", "revoked", "entered-in-error"}),
    "Communication": frozenset({"completed", "entered-in-error"}),
}
# References to the person: the reference alone (an identifier there may be a CHI, a display a name).
_PERSON_REFERENCES = frozenset({"for", "subject"})
_REFERENCE_KEYS = ("reference", "type", "identifier")
_META_KEYS = ("versionId", "lastUpdated", "profile")


def is_open(resource_type: str, resource: dict[str, Any]) -> bool:
    """Whether a workflow record is still under way (a skeleton is shown only then)."""
    return resource_type in CLOSED_STATUSES and resource.get("status") not in CLOSED_STATUSES[resource_type]


def _reference(value: dict[str, Any], person: bool) -> dict[str, Any]:
    keys = _REFERENCE_KEYS[:2] if person else _REFERENCE_KEYS
    return {k: value[k] for k in keys if k in value}


def skeleton(resource: dict[str, Any]) -> dict[str, Any]:
    """The skeleton of a workflow record (see the module docstring), tagged SUBSETTED."""
    allowed = SKELETON_ELEMENTS[resource["resourceType"]]
    shown: dict[str, Any] = {}
    for key, value in resource.items():
        if key not in allowed:
            continue
        if key == "meta":
            value = {k: value[k] for k in _META_KEYS if k in value} | {"tag": [SUBSETTED]}
        elif key in _PERSON_REFERENCES and isinstance(value, dict):
            value = _reference(value, person=True)
        elif isinstance(value, dict) and "reference" in value:
            value = _reference(value, person=False)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "reference" in v for v in value):
            value = [_reference(v, person=False) for v in value]
        shown[key] = value
    shown.setdefault("meta", {"tag": [SUBSETTED]})
    return shown


def visible_matches(policy: AccessPolicy, session: Session, caller: Caller, stored: Sequence[Stored], query: SearchQuery) -> Visible:
    """What the caller may see of the records a search matched in the store, less the skeletons
    the search must not match (``matches_skeleton``)."""
    visible = policy.visible(session, caller, stored)
    read = query.elements_read
    if not read:
        return visible
    resources = [shown if matches_skeleton(record, shown, read) else None for record, shown in zip(stored, visible.resources)]
    return Visible(resources, visible.withheld, visible.disclosures)


def matches_skeleton(record: Stored, shown: dict[str, Any] | None, read: frozenset[str]) -> bool:
    """Whether a search that read the elements ``read`` may match ``record`` as the caller sees
    it (``shown``). A skeleton counts as matched only when the search read nothing it leaves out:
    the store matched the whole record, so ``category=...`` (or ``:not``, a total, an
    If-None-Exist, a ``_revinclude``) on a skeleton would otherwise tell what its hidden elements hold."""
    if shown is None or record.type not in SKELETON_ELEMENTS or not is_skeleton(shown):
        return shown is not None
    return not read & (record.resource.keys() - SKELETON_ELEMENTS[record.type])


def is_skeleton(resource: dict[str, Any]) -> bool:
    """Whether a resource body is marked SUBSETTED (a skeleton, or an ``_elements`` result)."""
    return any(t.get("system") == SUBSETTED["system"] and t.get("code") == SUBSETTED["code"] for t in resource.get("meta", {}).get("tag", []))


def over_stored(stored: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """A skeleton update laid over the stored version: the skeleton's elements from ``incoming``,
    every other element and the meta from ``stored``; 403 when ``incoming`` sets an element
    outside the skeleton."""
    resource_type = stored["resourceType"]
    allowed = SKELETON_ELEMENTS[resource_type]
    hidden = sorted(set(incoming) - allowed)
    if hidden:
        raise FhirError(
            403,
            f"{resource_type}/{stored['id']} is updated as a skeleton (all this organisation may see of it without the "
            f"person's consent, or a body marked SUBSETTED), so it may not set {', '.join(hidden)}: those are kept as stored; "
            f"send only {', '.join(sorted(allowed - {'meta'}))}",
            "forbidden",
            f"{resource_type}.{hidden[0]}",
        )
    seen = skeleton(stored)
    merged = {k: v for k, v in stored.items() if k not in allowed}
    for key, value in incoming.items():
        if key != "meta":
            # An element sent back as the skeleton showed it keeps its stored form (e.g. a reference's display).
            merged[key] = stored[key] if key in stored and seen.get(key) == value else value
    meta = {k: v for k, v in stored.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return merged | ({"meta": meta} if meta else {})
