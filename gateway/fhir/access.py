"""Who may see and change which stored resources.

The FHIR service asks the policy three questions, in the manner of HAPI FHIR's
consent hooks: may this caller change this resource, which of these resources
may it see, and what must be hidden in them. The gateway installs the policy;
the default lets an organisation see and change what it holds, and every
caller read the partner directory.

Who may say what (DESIGN §7): the directory is written from ``conf/`` and the
console only, never by partners; a record is changed or deleted only by the
organisation holding it (and the workflow parties a Task names); a deleted id is
written again only by its holder; pathway workflow records are cancelled, never
deleted; another organisation may add its identifiers to a shared Patient but
not change the person's details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from sqlalchemy.orm import Session

from gateway.auth.tokens import Principal
from gateway.store.models import ResourceRow
from gateway.store.repository import DIRECTORY_TYPES, Stored

# The custodian of directory entries: written by `pathway conf load` and the console only.
DIRECTORY_CUSTODIAN = "https://pathway.scot/Id/partner|pathway"
# Pathway workflow records: partners cancel them (status), never delete them.
WORKFLOW_RECORDS = frozenset({"Task", "ServiceRequest", "EpisodeOfCare", "CarePlan"})
# Principal kind of Pathway's own pipelines (ingest, the demo builder) acting for an
# organisation: already authorised by the route or command that started them.
INTERNAL = "internal"


@dataclass(frozen=True)
class Caller:
    """A request's principal with the purpose and person it asks on behalf of."""

    principal: Principal
    purpose: str
    acting_for: str | None = None

    @property
    def organization(self) -> str:
        return self.principal.organization


@dataclass
class Visible:
    """What a caller may see of some stored resources: one entry per resource asked
    about, in order, None where it may see nothing of it."""

    resources: list[dict[str, Any] | None]
    withheld: bool = False
    disclosures: list[dict[str, Any]] = field(default_factory=list)


class AccessPolicy(Protocol):
    def write_refusal(self, session: Session, caller: Caller, previous: Stored | None, resource: dict[str, Any]) -> str | None:
        """Why this caller may not write this resource, or None when it may; ``previous`` is
        the current version, deleted or not."""

    def delete_refusal(self, session: Session, caller: Caller, previous: Stored) -> str | None:
        """Why this caller may not delete this resource, or None when it may."""

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored], channel: str = "api") -> Visible:
        """What this caller may see of each resource (possibly redacted), aligned with
        ``stored``, with the disclosure-ledger rows the caller should record if it shows them."""

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        """Custodians a search may be narrowed to in the database, or None for no narrowing."""


# Workflow resources are shared with the organisations they name, whoever holds them.
WORKFLOW_PARTICIPANTS: dict[str, tuple[str, ...]] = {
    "Task": ("owner", "requester"),
    "ServiceRequest": ("requester", "performer"),
    "Communication": ("recipient", "sender"),
}
# Of those, the ones a named organisation may also update (the workflow hooks
# then decide which changes each party may make).
WORKFLOW_WRITABLE = frozenset({"Task"})


class Participants:
    """Resolves the organisations a workflow resource names to their identifiers."""

    def __init__(self) -> None:
        self._organizations: dict[str, frozenset[str]] = {}

    def _identifiers(self, session: Session, reference: dict[str, Any]) -> frozenset[str]:
        if "identifier" in reference and reference["identifier"].get("system"):
            return frozenset({f"{reference['identifier']['system']}|{reference['identifier'].get('value')}"})
        ref = reference.get("reference", "")
        if not ref.startswith("Organization/"):
            return frozenset()
        cached = self._organizations.get(ref)
        if cached is None:
            row = session.get(ResourceRow, ("Organization", ref.split("/", 1)[1]))
            directory_entry = row is not None and row.key_id is None and row.custodian == DIRECTORY_CUSTODIAN
            body = orjson.loads(row.body) if directory_entry else {}
            cached = frozenset(f"{i.get('system')}|{i.get('value')}" for i in body.get("identifier", []))
            self._organizations[ref] = cached
        return cached

    def names(self, session: Session, resource_type: str, resource: dict[str, Any], organization: str) -> bool:
        """Whether the resource names ``organization`` in one of its workflow roles."""
        for element in WORKFLOW_PARTICIPANTS.get(resource_type, ()):
            value = resource.get(element)
            for reference in value if isinstance(value, list) else [value] if value else []:
                if isinstance(reference, dict) and organization in self._identifiers(session, reference):
                    return True
        return False


class CustodianPolicy:
    """An organisation sees and changes what it holds and the workflow resources that
    name it; the directory is open to all."""

    def __init__(self) -> None:
        self.participants = Participants()

    def write_refusal(self, session: Session, caller: Caller, previous: Stored | None, resource: dict[str, Any]) -> str | None:
        if caller.acting_for is not None:
            return "a portal acting for a person may read what they consented to, not change records"
        if resource["resourceType"] in DIRECTORY_TYPES and caller.principal.kind != INTERNAL:
            return f"{resource['resourceType']} is a directory resource: it comes from the partnership's configuration, not from partners"
        if previous is None or previous.custodian == caller.organization:
            return None
        if previous.deleted:
            return f"{previous.reference} was deleted by the organisation that held it; only it may write that id again"
        if previous.type in WORKFLOW_WRITABLE and self.participants.names(session, previous.type, previous.resource, caller.organization):
            return None
        if previous.type == "Patient" and only_adds_identifiers(previous.resource, resource):
            return None
        return f"{previous.reference} is held by another organisation"

    def delete_refusal(self, session: Session, caller: Caller, previous: Stored) -> str | None:
        if previous.type in WORKFLOW_RECORDS and caller.principal.kind != INTERNAL:
            return f"{previous.type} is a pathway workflow record: cancel it (status) instead of deleting it"
        if previous.type == "Patient" and previous.custodian != caller.organization:
            return f"{previous.reference} is held by another organisation"
        return self.write_refusal(session, caller, previous, previous.resource)

    def _shown(self, session: Session, caller: Caller, stored: Stored) -> bool:
        return (
            stored.type in DIRECTORY_TYPES
            or stored.custodian == caller.organization
            or self.participants.names(session, stored.type, stored.resource, caller.organization)
        )

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored], channel: str = "api") -> Visible:
        return Visible([s.resource if self._shown(session, caller, s) else None for s in stored])

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        if resource_type in DIRECTORY_TYPES or resource_type in WORKFLOW_PARTICIPANTS:
            return None
        return [caller.organization]


def only_adds_identifiers(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Whether ``incoming`` is ``stored`` with identifiers and labels added and nothing else
    changed: what an organisation that does not hold a shared Patient may do to it."""
    def rest(resource: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in resource.items() if k not in ("meta", "identifier")}

    def pairs(resource: dict[str, Any], element: str) -> set[str]:
        return {orjson.dumps(i, option=orjson.OPT_SORT_KEYS).decode() for i in resource.get(element, [])}

    def labels(resource: dict[str, Any]) -> set[str]:
        meta = resource.get("meta", {})
        return {orjson.dumps(label, option=orjson.OPT_SORT_KEYS).decode() for key in ("security", "tag") for label in meta.get(key, [])}

    return (
        rest(stored) == rest(incoming)
        and pairs(stored, "identifier") <= pairs(incoming, "identifier")
        and labels(stored) <= labels(incoming)
    )
