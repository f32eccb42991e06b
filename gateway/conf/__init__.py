"""The partnership's configuration in ``conf/`` (DESIGN §10): schemas, loading and cross-checks.

``load_conf(directory)`` reads ``partners.yaml``, ``agreements.yaml`` and ``pathway.yaml``,
validates each strictly (unknown keys, unknown codes, duplicate ids and dangling references
are errors) and returns a :class:`Conf`. A wrong file raises :class:`ConfError` naming the
file, the entry and the field, e.g.
``conf/partners.yaml: organizations[3] (rehab-x).clients[0].scopes[1]: 'system/Foo' is not a valid scope``.
"""

from __future__ import annotations

from pathlib import Path

from gateway.conf.checks import _check_agreements, _check_partners, _check_pathway
from gateway.conf.errors import ConfError, _File
from gateway.conf.fhir import (
    ORGANIZATION_TYPE_DISPLAY,
    ORGANIZATION_TYPE_SYSTEM,
    PERSON_ROLE_DISPLAY,
    PRACTITIONER_ROLE_ID_SYSTEM,
    PRACTITIONER_ROLE_SYSTEM,
    PRACTITIONER_SYSTEM,
)
from gateway.conf.schemas import (
    EMIS_ORGANISATION_SYSTEM,
    Address,
    AgreementsFile,
    AlertRecipient,
    Client,
    ClientRole,
    Conf,
    EventType,
    Governance,
    Identifier,
    Organization,
    OrganizationType,
    PartnersFile,
    Person,
    PersonName,
    PersonRole,
    Telecom,
    Webhook,
)
from gateway.conf.settings import Delivery, EarlyExitAlert, PathwaySettings, Targets, TimeLimits, Tokens, parse_pathway_settings

__all__ = [
    "EMIS_ORGANISATION_SYSTEM", "ORGANIZATION_TYPE_DISPLAY", "ORGANIZATION_TYPE_SYSTEM", "PERSON_ROLE_DISPLAY",
    "PRACTITIONER_ROLE_ID_SYSTEM", "PRACTITIONER_ROLE_SYSTEM", "PRACTITIONER_SYSTEM", "Address", "AgreementsFile",
    "AlertRecipient", "Client", "ClientRole", "Conf", "ConfError", "Delivery", "EarlyExitAlert", "EventType", "Governance", "Identifier",
    "Organization", "OrganizationType", "PartnersFile", "PathwaySettings", "Person", "PersonName", "PersonRole",
    "Targets", "Telecom", "TimeLimits", "Tokens", "Webhook", "load_conf", "parse_pathway_settings",
]


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
    agreements = _check_agreements(agreements_file, listed, partners) if listed else []
    problems = partners_file.problems + pathway_file.problems + agreements_file.problems
    if problems or settings is None:
        raise ConfError(problems)
    return Conf(tuple(partners.organizations), tuple(partners.people), tuple(agreements), settings)
