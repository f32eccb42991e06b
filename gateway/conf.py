"""The partnership's configuration in ``conf/`` (DESIGN §10): schemas, loading and cross-checks.

``load_conf(directory)`` reads ``partners.yaml``, ``agreements.yaml`` and ``pathway.yaml``,
validates each strictly (unknown keys, unknown codes, duplicate ids and dangling references
are errors) and returns a :class:`Conf`. A wrong file raises :class:`ConfError` naming the
file, the entry and the field, e.g.
``conf/partners.yaml: organizations[3] (rehab-x).clients[0].scopes[1]: 'system/Foo' is not a valid scope``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent.agreements import Agreement, parse_agreement
from gateway.auth.scopes import is_valid_scope
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM

ORGANIZATION_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/organization-type"
PRACTITIONER_ROLE_SYSTEM = "https://pathway.scot/CodeSystem/practitioner-role"
PRACTITIONER_SYSTEM = "https://pathway.scot/Id/practitioner"
PRACTITIONER_ROLE_ID_SYSTEM = "https://pathway.scot/Id/practitioner-role"

OrganizationType = Literal[
    "hscp", "gp-practice", "recovery-service", "third-sector", "advocacy", "rehab-facility", "carers-centre"
]
EventType = Literal[
    "referral", "facility-referral", "task-status", "review", "review-summary", "contingency-alert", "withdrawal-notice"
]
ClientRole = Literal["ig-officer", "break-glass", "partnership-lead", "key-worker"]
PersonRole = Literal["key-worker", "social-worker", "nurse", "advocate", "community-team", "gp", "facility-manager"]
AlertRecipient = Literal["rehab_team", "key_worker", "community_team", "consented_carers"]

ORGANIZATION_TYPE_DISPLAY: dict[str, str] = {
    "hscp": "Health and Social Care Partnership",
    "gp-practice": "GP practice",
    "recovery-service": "Drug and alcohol recovery service",
    "third-sector": "Third-sector recovery agency",
    "advocacy": "Independent advocacy service",
    "rehab-facility": "Residential rehabilitation facility",
    "carers-centre": "Carers' centre",
}
PERSON_ROLE_DISPLAY: dict[str, str] = {
    "key-worker": "Key worker",
    "social-worker": "Social worker",
    "nurse": "Nurse",
    "advocate": "Independent advocate",
    "community-team": "Community recovery team worker",
    "gp": "General practitioner",
    "facility-manager": "Facility manager",
}

_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ODS_CODE = re.compile(r"^[A-Z0-9]{3,10}$")
EMIS_ORGANISATION_SYSTEM = "https://pathway.scot/Id/emis/organisation-guid"
_GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
_UK_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ]{6,18}[0-9]$")
_LOCAL_HOSTS = ("http://127.0.0.1", "http://localhost")


class ConfError(ValueError):
    """A configuration file is wrong; ``problems`` lists each as ``file: where: what``."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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
        if not (url.startswith("https://") or url.startswith(_LOCAL_HOSTS)):
            raise ValueError(f"{url!r} must be an https:// URL (http only to 127.0.0.1 or localhost)")
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
        resource: dict[str, Any] = {
            "resourceType": "Organization",
            "id": self.id,
            "active": True,
            "identifier": [i.to_fhir() for i in self.identifiers],
            "type": [
                {
                    "coding": [
                        {
                            "system": ORGANIZATION_TYPE_SYSTEM,
                            "code": self.type,
                            "display": ORGANIZATION_TYPE_DISPLAY[self.type],
                        }
                    ]
                }
            ],
            "name": self.name,
            "address": [
                {
                    "use": "work",
                    "line": list(self.address.lines),
                    "city": self.address.town,
                    "district": self.council_area,
                    "postalCode": self.address.postcode,
                    "country": "GB",
                }
            ],
        }
        if self.telecom and self.telecom.to_fhir():
            resource["telecom"] = self.telecom.to_fhir()
        return resource


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
        contact = self.telecom.to_fhir() if self.telecom else []
        practitioner: dict[str, Any] = {
            "resourceType": "Practitioner",
            "id": self.id,
            "active": True,
            "identifier": [{"system": PRACTITIONER_SYSTEM, "value": self.id}],
            "name": [{"use": "official", "family": self.name.family, "given": list(self.name.given)}],
        }
        role: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "id": self.id,
            "active": True,
            "identifier": [{"system": PRACTITIONER_ROLE_ID_SYSTEM, "value": self.id}],
            "practitioner": {"reference": f"Practitioner/{self.id}", "display": self.name.text},
            "organization": {"reference": f"Organization/{self.organization}"},
            "code": [
                {"coding": [{"system": PRACTITIONER_ROLE_SYSTEM, "code": self.role, "display": PERSON_ROLE_DISPLAY[self.role]}]}
            ],
        }
        if contact:
            practitioner["telecom"] = contact
            role["telecom"] = contact
        return practitioner, role


class PartnersFile(_Strict):
    organizations: Annotated[list[Organization], Field(min_length=1)]
    people: list[Person] = []


class AgreementsFile(_Strict):
    agreements: list[dict[str, Any]]


class TimeLimits(_Strict):
    referral_decision_days: Annotated[int, Field(ge=1, le=365)]
    treatment_standard_days: Annotated[int, Field(ge=1, le=365)]


class Targets(_Strict):
    treated_within_standard: Annotated[float, Field(ge=0, le=1)]
    reviews_on_time: Annotated[float, Field(ge=0, le=1)]


class EarlyExitAlert(_Strict):
    """Who is told of an early exit, and when an undelivered or unacknowledged alert is escalated."""

    notify: Annotated[list[AlertRecipient], Field(min_length=1), AfterValidator(_unique)]
    # Not delivered (2xx) to every subscribed recipient within this many minutes: escalate.
    delivered_within_minutes: Annotated[float, Field(gt=0, le=1440)] = 5
    # Not acknowledged ($ack) by a recipient organisation within this many minutes: escalate.
    acknowledged_within_minutes: Annotated[float, Field(gt=0, le=10080)] = 60
    # Organisations (partners.yaml ids) sent the alert when it is escalated.
    fallback: Annotated[list[Slug], AfterValidator(_unique)] = []


class Delivery(_Strict):
    """Push retries (``gateway.delivery.worker``): capped exponential backoff with full jitter
    for ``retry_for_hours`` after an event, then a dead letter for an operator to replay."""

    base_delay_seconds: Annotated[float, Field(gt=0)] = 2.0
    max_delay_seconds: Annotated[float, Field(gt=0)] = 3600.0
    retry_for_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 72.0
    # An optional cap on attempts as well (None: retry for retry_for_hours).
    max_attempts: Annotated[int, Field(ge=1, le=100000)] | None = None
    # A subscription whose oldest undelivered event has failed this long shows status error.
    error_after_hours: Annotated[float, Field(gt=0)] = 24.0
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    lease_seconds: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _backoff_order(self) -> Delivery:
        if self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("max_delay_seconds is less than base_delay_seconds")
        return self

    def backoff(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt: exponential with full jitter."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** min(max(attempts - 1, 0), 60))
        return (rng or random).uniform(0, ceiling)


class Tokens(_Strict):
    access_token_seconds: Annotated[int, Field(ge=30, le=3600)]
    assertion_max_seconds: Annotated[int, Field(ge=30, le=300)]


class PathwaySettings(_Strict):
    """``conf/pathway.yaml``: who runs the pathway and its clocks."""

    rehab_team: Slug
    community_team: Slug
    advocacy_service: Slug | None = None
    alternative_pathway_agency: Slug | None = None
    carer_portal: Slug | None = None
    duty_key_worker: Slug | None = None
    handover: dict[Slug, Slug] = {}
    review_interval_weeks: Literal[4, 6]
    residential_weeks: Annotated[int, Field(ge=1, le=52)]
    time_limits: TimeLimits
    targets: Targets
    early_exit_alert: EarlyExitAlert
    delivery: Delivery = Delivery()
    tokens: Tokens


def parse_pathway_settings(document: Any) -> PathwaySettings:
    """A parsed ``pathway.yaml`` as its settings; ValueError naming each field that is wrong."""
    try:
        return PathwaySettings.model_validate(_json_like(document))
    except ValidationError as error:
        problems = [f"{_where(p['loc'], document)}: {_message(p)}" for p in error.errors()]
        raise ValueError("pathway.yaml: " + "; ".join(problems)) from None


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


# -- reading files -----------------------------------------------------------------------------

_Model = TypeVar("_Model", bound=BaseModel)
Location = Sequence[int | str]


def _json_like(value: Any) -> Any:
    """YAML dates become ISO strings, so every file is validated as the JSON it stands for."""
    if isinstance(value, dict):
        return {str(k): _json_like(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_like(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _where(location: Location, document: Any) -> str:
    """``organizations[3] (rehab-x).clients[0].scopes[1]`` for a location in ``document``."""
    text, node = "", document
    for depth, step in enumerate(location):
        node = node[step] if _has(node, step) else None
        if isinstance(step, int):
            text += f"[{step}]"
            if depth == 1 and isinstance(node, dict) and isinstance(node.get("id"), str):
                text += f" ({node['id']})"
        else:
            text += f".{step}" if text else step
    return text


def _has(node: Any, step: int | str) -> bool:
    if isinstance(node, list):
        return isinstance(step, int) and 0 <= step < len(node)
    return isinstance(node, dict) and step in node


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the schema)"
    if kind == "literal_error":
        return f"{error['input']!r} is not allowed; expected {ctx['expected']}"
    return f"{error['msg']} (got {error['input']!r})"


class _File:
    """One configuration file: its parsed document and the problems found in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfError(f"{path}: file not found") from None
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise ConfError(f"{path}: {where}: not valid YAML: {error.problem}") from None
        if not isinstance(document, dict):
            raise ConfError(f"{path}: expected a mapping of keys at the top level")
        self.document: dict[str, Any] = _json_like(document)

    def report(self, location: Location, message: str) -> None:
        self.problems.append(f"{self.path}: {_where(location, self.document)}: {message}")

    def report_invalid(self, error: ValidationError, prefix: Location = ()) -> None:
        for problem in error.errors():
            self.report([*prefix, *problem["loc"]], _message(problem))

    def parse(self, model: type[_Model]) -> _Model | None:
        """The document as ``model``, or None with the reasons reported."""
        try:
            return model.model_validate(self.document)
        except ValidationError as error:
            self.report_invalid(error)
            return None


# -- cross-checks ------------------------------------------------------------------------------


def _duplicates(keys: Sequence[str]) -> dict[int, int]:
    """For each position whose key appeared earlier, the first position with that key."""
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for position, key in enumerate(keys):
        if key in first:
            repeats[position] = first[key]
        else:
            first[key] = position
    return repeats


def _check_partners(file: _File, partners: PartnersFile) -> None:
    orgs = partners.organizations
    for later, earlier in _duplicates([o.id for o in orgs]).items():
        file.report(("organizations", later, "id"), f"duplicate organisation id {orgs[later].id!r} (also organizations[{earlier}])")
    identifier_holders: dict[tuple[str, str], str] = {}
    client_holders: dict[str, str] = {}
    for index, org in enumerate(orgs):
        partner_id = org.identifier(PARTNER_SYSTEM)
        if partner_id is None:
            file.report(("organizations", index, "identifiers"), f"every organisation needs a partner id ({PARTNER_SYSTEM})")
        elif partner_id != org.id:
            file.report(
                ("organizations", index, "identifiers"), f"partner id {partner_id!r} must equal the organisation id {org.id!r}"
            )
        for position, identifier in enumerate(org.identifiers):
            holder = identifier_holders.setdefault((identifier.system, identifier.value), org.id)
            if holder != org.id:
                file.report(
                    ("organizations", index, "identifiers", position),
                    f"identifier {identifier.system}|{identifier.value} is also held by {holder}",
                )
        for position, client in enumerate(org.clients):
            holder = client_holders.setdefault(client.id, org.id)
            if holder != org.id:
                file.report(("organizations", index, "clients", position, "id"), f"client id {client.id!r} is also a client of {holder}")
        if org.subscriptions and org.webhook is None:
            file.report(("organizations", index, "subscriptions"), "subscriptions need a webhook to deliver to")
    people = partners.people
    for later, earlier in _duplicates([p.id for p in people]).items():
        file.report(("people", later, "id"), f"duplicate person id {people[later].id!r} (also people[{earlier}])")
    known = {o.id for o in orgs}
    for index, person in enumerate(people):
        if person.organization not in known:
            file.report(("people", index, "organization"), f"no organisation {person.organization!r} in {file.path.name}")


def _check_pathway(file: _File, settings: PathwaySettings, partners: PartnersFile) -> None:
    orgs = {o.id: o for o in partners.organizations}

    def organization(field: str, org_id: str | None, wanted_type: str | None = None) -> Organization | None:
        org = orgs.get(org_id) if org_id else None
        if org_id and org is None:
            file.report((field,), f"no organisation {org_id!r} in partners.yaml")
        elif org is not None and wanted_type and org.type != wanted_type:
            file.report((field,), f"{org_id!r} is of type {org.type}, not {wanted_type}")
        return org

    organization("rehab_team", settings.rehab_team, "hscp")
    organization("community_team", settings.community_team)
    organization("advocacy_service", settings.advocacy_service, "advocacy")
    organization("alternative_pathway_agency", settings.alternative_pathway_agency)
    portal = organization("carer_portal", settings.carer_portal)
    if portal is not None and not any(c.kind == "portal" for c in portal.clients):
        file.report(("carer_portal",), f"{portal.id!r} has no client of kind portal")
    for kind, org_id in settings.handover.items():
        organization(f"handover.{kind}", org_id)
    for org_id in settings.early_exit_alert.fallback:
        organization("early_exit_alert.fallback", org_id)
    if settings.duty_key_worker is not None:
        worker = next((p for p in partners.people if p.id == settings.duty_key_worker), None)
        if worker is None:
            file.report(("duty_key_worker",), f"no person {settings.duty_key_worker!r} in partners.yaml people")
        elif worker.role != "key-worker":
            file.report(("duty_key_worker",), f"{worker.id!r} has role {worker.role}, not key-worker")


def _check_agreements(file: _File, entries: list[dict[str, Any]], partners: PartnersFile) -> list[Agreement]:
    """The agreements ``consent.agreements`` accepts, each party checked against the directory."""
    known = {(i.system, i.value) for o in partners.organizations for i in o.identifiers}
    agreements: list[Agreement] = []
    first_at: dict[tuple[Any, Any], int] = {}
    for index, entry in enumerate(entries):
        try:
            agreements.append(parse_agreement(entry))
        except ValidationError as error:
            file.report_invalid(error, ("agreements", index))
            continue
        except ValueError as error:
            file.report(("agreements", index), str(error))
            continue
        key = (entry.get("id"), entry.get("version"))
        first = first_at.setdefault(key, index)
        if first != index:
            file.report(("agreements", index, "version"), f"version {key[1]} of {key[0]} is also agreements[{first}]")
        for position, party in enumerate(entry.get("parties") or []):
            if (party.get("system"), party.get("value")) not in known:
                file.report(
                    ("agreements", index, "parties", position),
                    f"no organisation in partners.yaml has identifier {party.get('system')}|{party.get('value')}",
                )
    return agreements


def load_conf(directory: Path) -> Conf:
    """Read and check ``partners.yaml``, ``agreements.yaml`` and ``pathway.yaml`` in ``directory``."""
    partners_file = _File(directory / "partners.yaml")
    partners = partners_file.parse(PartnersFile)
    if partners is None:
        raise ConfError(partners_file.problems)
    _check_partners(partners_file, partners)
    pathway_file = _File(directory / "pathway.yaml")
    settings = pathway_file.parse(PathwaySettings)
    if settings is not None:
        _check_pathway(pathway_file, settings, partners)
    agreements_file = _File(directory / "agreements.yaml")
    listed = agreements_file.parse(AgreementsFile)
    agreements = _check_agreements(agreements_file, listed.agreements, partners) if listed else []
    problems = partners_file.problems + pathway_file.problems + agreements_file.problems
    if problems or settings is None:
        raise ConfError(problems)
    return Conf(tuple(partners.organizations), tuple(partners.people), tuple(agreements), settings)
