"""Names for the identifiers the console shows: organisations, carers, practitioners."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.fhir.access import DIRECTORY_CUSTODIAN
from gateway.store.repository import Repository
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM


@dataclass(frozen=True)
class Organization:
    reference: str  # "Organization/{id}"
    identifier: str  # "system|value": ODS code if any, else partner id
    name: str
    identifiers: tuple[dict[str, str], ...]


def _primary(identifiers: list[dict[str, Any]]) -> dict[str, str] | None:
    for system in (ODS_SYSTEM, PARTNER_SYSTEM):
        for identifier in identifiers:
            if identifier.get("system") == system and identifier.get("value"):
                return {"system": system, "value": identifier["value"]}
    return None


@dataclass
class Directory:
    """The partner directory as the console needs it, read once per page."""

    organizations: list[Organization] = field(default_factory=list)
    _names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, repo: Repository) -> "Directory":
        directory = cls()
        for _, stored in repo.search("Organization", custodians=[DIRECTORY_CUSTODIAN], batch=200):
            resource = stored.resource
            identifiers = [i for i in resource.get("identifier", []) if i.get("system") and i.get("value")]
            primary = _primary(identifiers)
            if primary is None:
                continue
            org = Organization(stored.reference, f"{primary['system']}|{primary['value']}", resource.get("name", stored.id), tuple(identifiers))
            directory.organizations.append(org)
            directory._names[org.reference] = org.name
            for identifier in identifiers:
                directory._names[f"{identifier['system']}|{identifier['value']}"] = org.name
        directory.organizations.sort(key=lambda o: o.name)
        return directory

    def name_of(self, key: str | None) -> str:
        """The organisation's name for a reference or "system|value", else the key itself."""
        if not key:
            return ""
        return self._names.get(key, key)

    def by_reference(self, reference: str) -> Organization | None:
        return next((o for o in self.organizations if o.reference == reference), None)

    def by_identifier(self, key: str) -> Organization | None:
        return next((o for o in self.organizations if key == o.identifier or key in {f"{i['system']}|{i['value']}" for i in o.identifiers}), None)

    def known_as(self, key: str) -> set[str]:
        """Every ``system|value`` the organisation with identifier ``key`` carries (``key`` itself
        when the directory does not know it)."""
        org = self.by_identifier(key)
        return {key} | ({f"{i['system']}|{i['value']}" for i in org.identifiers} if org else set())


def person_name(resource: dict[str, Any]) -> str:
    """A person's display name from a Patient or RelatedPerson."""
    for name in resource.get("name", []):
        text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
        if text:
            return text
    return resource.get("id", "unnamed")
