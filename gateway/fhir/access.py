"""Who may see and change which stored resources.

The FHIR service asks the policy three questions, in the manner of HAPI FHIR's
consent hooks: may this caller change this resource, which of these resources
may it see, and what must be hidden in them. The gateway installs the policy;
the default lets an organisation see and change what it holds, and every
caller read the partner directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from gateway.auth.tokens import Principal
from gateway.store.repository import Stored

DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})


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
        """Why this caller may not write this resource, or None when it may."""

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored]) -> Visible:
        """What this caller may see of each resource (possibly redacted), aligned with ``stored``."""

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        """Custodians a search may be narrowed to in the database, or None for no narrowing."""


class CustodianPolicy:
    """An organisation sees and changes only what it holds; the directory is open."""

    def write_refusal(self, session: Session, caller: Caller, previous: Stored | None, resource: dict[str, Any]) -> str | None:
        if previous is not None and previous.custodian != caller.organization:
            return f"{previous.reference} is held by another organisation"
        return None

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored]) -> Visible:
        return Visible(
            [s.resource if s.type in DIRECTORY_TYPES or s.custodian == caller.organization else None for s in stored]
        )

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        return None if resource_type in DIRECTORY_TYPES else [caller.organization]
