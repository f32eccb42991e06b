"""Cross-file checks: duplicate ids, dangling references, parties missing from the directory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from consent.agreements import Agreement, parse_agreement
from gateway.conf.errors import _File
from gateway.conf.schemas import AgreementsFile, Organization, PartnersFile
from gateway.conf.settings import PathwaySettings
from mappings.identifiers import PARTNER_SYSTEM


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


def _check_agreements(file: _File, listed: AgreementsFile, partners: PartnersFile) -> list[Agreement]:
    """The agreements ``consent.agreements`` accepts, each party checked against the directory,
    with the partnership's lapse time where an agreement does not state its own."""
    lapse, alerts = listed.governance.lapse_after_days, listed.governance.ig_alerts
    if alerts is not None and alerts.organization not in {o.id for o in partners.organizations}:
        file.report(("governance", "ig_alerts", "organization"), f"no organisation {alerts.organization!r} in partners.yaml")
    entries = [e if lapse is None or not isinstance(e, dict) or "lapse_after_days" in e else {**e, "lapse_after_days": lapse} for e in listed.agreements]
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
