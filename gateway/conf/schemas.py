"""The schemas of ``partners.yaml`` and ``agreements.yaml``, and the validated :class:`Conf`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from consent.agreements import Agreement
from gateway.auth.scopes import is_valid_scope
from gateway.conf.fhir import organization_resource, person_resources
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM

if TYPE_CHECKING:
    from gateway.conf.settings import PathwaySettings

OrganizationType = Literal[
    "hscp", "gp-practice", "recovery-service", "third-sector", "advocacy", "rehab-facility", "carers-centre"
]
EventType = Literal[
    "referral", "facility-referral", "task-status", "review", "review-summary", "contingency-alert", "withdrawal-notice",
    "agreement-notice", "break-glass-alert",
]
ClientRole = Literal["ig-officer", "break-glass", "partnership-lead", "key-worker"]
PersonRole = Literal["key-worker", "social-worker", "nurse", "advocate", "community-team", "gp", "facility-manager"]
AlertRecipient = Literal["rehab_team", "key_worker", "community_team", "consented_carers"]


_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ODS_CODE = re.compile(r"^[A-Z0-9]{3,10}$")
EMIS_ORGANISATION_SYSTEM = "https://pathway.scot/Id/emis/organisation-guid"
_GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
_UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ]{6,18}[0-9]$")
_LOCAL_HOSTS = ("127.0.0.1", "localhost")



def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"{value!r} is not a valid id (lowercase letters, digits and single hyphens)")
    return value


def _scope(value: str) -> str:
    if not is_valid_scope(value):
        raise ValueError(f"{value!r} is not a valid scope")
    return value


def _postcode(value: str) -> str:
    if not _UK_POSTCODE.match(value):
        raise ValueError(f"{value!r} is not a UK postcode in capitals with one space (e.g. DD1 1AA)")
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _phone(value: str) -> str:
    if not _PHONE.match(value):
        raise ValueError(f"{value!r} is not a phone number (digits and spaces, optional leading +)")
    return value


def _unique(values: list[Any]) -> list[Any]:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return values


Slug = Annotated[str, AfterValidator(_slug)]
Scope = Annotated[str, AfterValidator(_scope)]
Text = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Identifier(_Strict):
    system: Literal["https://fhir.nhs.uk/Id/ods-organization-code", "https://pathway.scot/Id/partner", "https://pathway.scot/Id/emis/organisation-guid"]
    value: Text

    @model_validator(mode="after")
    def _value_fits_system(self) -> Identifier:
        if self.system == ODS_SYSTEM and not _ODS_CODE.match(self.value):
            raise ValueError(f"{self.value!r} is not an ODS code (3-10 capital letters or digits)")
        if self.system == EMIS_ORGANISATION_SYSTEM and not _GUID.match(self.value):
            raise ValueError(f"{self.value!r} is not an EMIS OrganisationGuid (upper-case GUID without braces)")
        if self.system == PARTNER_SYSTEM:
            _slug(self.value)
        return self

    def to_fhir(self) -> dict[str, str]:
        return {"system": self.system, "value": self.value}


class Address(_Strict):
    lines: Annotated[list[Text], Field(min_length=1)]
    town: Text
    postcode: Annotated[str, AfterValidator(_postcode)]


class Telecom(_Strict):
    phone: Annotated[str, AfterValidator(_phone)] | None = None
    email: Annotated[str, AfterValidator(_email)] | None = None

    def to_fhir(self) -> list[dict[str, str]]:
        points = [("phone", self.phone), ("email", self.email)]
        return [{"system": system, "value": value, "use": "work"} for system, value in points if value]


class Webhook(_Strict):
    url: Text
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 10

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        return webhook_url(url)


def webhook_url(url: str) -> str:
    """``url`` if it is https:// (http only to this machine: 127.0.0.1 or localhost, the host
    parsed, not a prefix) and names no internal address (private, link-local, unspecified)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"{url!r} is not a URL") from None
    if not ((parts.scheme == "https" and host) or (parts.scheme == "http" and host in _LOCAL_HOSTS)):
        raise ValueError(f"{url!r} must be an https:// URL (http only to 127.0.0.1 or localhost)")
    if parts.username or parts.password:
        raise ValueError(f"{url!r} must not carry a user name or password")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    address = getattr(address, "ipv4_mapped", None) or address
    if not address.is_loopback and (address.is_private or address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved):
        raise ValueError(f"{url!r} names an internal address; notifications go to a partner's public https endpoint")
    return url


class Client(_Strict):
    """An API client of an organisation (OAuth ``client_id``)."""

    id: Slug
    kind: Literal["system", "portal"] = "system"
    scopes: Annotated[list[Scope], Field(min_length=1), AfterValidator(_unique)]
    roles: Annotated[list[ClientRole], AfterValidator(_unique)] = []
    jwks: dict[str, Any] | None = None

    @field_validator("jwks")
    @classmethod
    def _jwks_shape(cls, jwks: dict[str, Any] | None) -> dict[str, Any] | None:
        if jwks is None:
            return None
        keys = jwks.get("keys")
        if set(jwks) != {"keys"} or not isinstance(keys, list):
            raise ValueError("must be a JWK set: {keys: [...]}")
        for position, key in enumerate(keys):
            if not isinstance(key, dict) or "kty" not in key:
                raise ValueError(f"keys[{position}] is not a JWK (no kty)")
            if any(private in key for private in ("d", "p", "q")):
                raise ValueError(f"keys[{position}] holds private key material; register public keys only")
        return jwks


class Organization(_Strict):
    """A partner organisation; also the FHIR Organization with the same id."""

    id: Slug
    name: Text
    type: OrganizationType
    identifiers: Annotated[list[Identifier], Field(min_length=1)]
    council_area: Text
    address: Address
    telecom: Telecom | None = None
    webhook: Webhook | None = None
    subscriptions: Annotated[list[EventType], AfterValidator(_unique)] = []
    clients: list[Client] = []
    # May record a person's consent grants (DESIGN §7 "who may assert what"); any partner may record a refusal.
    records_consent: bool = False

    def identifier(self, system: str) -> str | None:
        """This organisation's identifier value in ``system``, if it has one."""
        return next((i.value for i in self.identifiers if i.system == system), None)

    def primary_identifier(self) -> Identifier:
        """The identifier this organisation acts under: its ODS code, else its partner id."""
        ods = [i for i in self.identifiers if i.system == ODS_SYSTEM]
        return (ods or [i for i in self.identifiers if i.system == PARTNER_SYSTEM])[0]

    def to_fhir(self) -> dict[str, Any]:
        """The FHIR R4 Organization (directory resource: no person-data labels)."""
        return organization_resource(self)


class PersonName(_Strict):
    given: Annotated[list[Text], Field(min_length=1)]
    family: Text

    @property
    def text(self) -> str:
        return " ".join([*self.given, self.family])


class Person(_Strict):
    """A named worker the pathway needs; a Practitioner with a PractitionerRole at one organisation."""

    id: Slug
    name: PersonName
    organization: Slug
    role: PersonRole
    telecom: Telecom | None = None

    def to_fhir(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(Practitioner, PractitionerRole)`` as FHIR R4 dicts, both with this person's id."""
        return person_resources(self)


class PartnersFile(_Strict):
    organizations: Annotated[list[Organization], Field(min_length=1)]
    people: list[Person] = []


class IgAlerts(_Strict):
    """Where break-glass alerts go: an email address, delivered through ``organization``'s
    ``break-glass-alert`` subscription (an email relay)."""

    organization: Slug
    email: Annotated[str, AfterValidator(_email)]


class Governance(_Strict):
    """Information-governance settings in ``agreements.yaml``."""

    # An agreement lapses once its review is more than this many days overdue (written into
    # each agreement that does not state its own).
    lapse_after_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    break_glass_roles: Annotated[list[ClientRole], AfterValidator(_unique)] = ["break-glass"]
    ig_alerts: IgAlerts | None = None


class AgreementsFile(_Strict):
    governance: Governance = Governance()
    agreements: list[dict[str, Any]]


@dataclass(frozen=True)
class Conf:
    """The validated configuration of one partnership."""

    organizations: tuple[Organization, ...]
    people: tuple[Person, ...]
    agreements: tuple[Agreement, ...]
    pathway: PathwaySettings

    def organization(self, organization_id: str) -> Organization | None:
        """The organisation with this directory id."""
        return next((o for o in self.organizations if o.id == organization_id), None)

    def organization_by_identifier(self, system: str, value: str) -> Organization | None:
        """The organisation holding identifier ``system|value``."""
        return next((o for o in self.organizations if o.identifier(system) == value), None)

    def client(self, client_id: str) -> tuple[Organization, Client] | None:
        """The client with this ``client_id`` and the organisation it belongs to."""
        return next(((o, c) for o in self.organizations for c in o.clients if c.id == client_id), None)

    def person(self, person_id: str) -> Person | None:
        """The named worker with this id."""
        return next((p for p in self.people if p.id == person_id), None)
