"""Finding a person's pathway records in the store, and naming organisations.

Every resource of one pathway (the referral, its Task, EpisodeOfCare and CarePlan)
carries the referral's business identifier, so each is one identifier search away.
"""

from __future__ import annotations

from typing import Any

from gateway.fhir.access import DIRECTORY_CUSTODIAN
from gateway.store.repository import Repository, Stored
from mappings.identifiers import ODS_SYSTEM, PARTNER_SYSTEM, REFERRAL_SYSTEM

from gateway.pathway.codes import CARE_TEAM_ROLE_SYSTEM, TASK_TYPE_SYSTEM, code_of


def first(repo: Repository, resource_type: str, criteria: list[tuple[str, list[str]]]) -> Stored | None:
    """The newest current resource matching ``criteria``, if any."""
    return next((stored for _, stored in repo.search(resource_type, criteria, batch=1)), None)


def directory_entry(repo: Repository, resource_type: str, resource_id: str) -> Stored | None:
    """The directory's current ``resource_type/resource_id`` (from ``conf/``), if it has one."""
    stored = repo.current(resource_type, resource_id)
    return stored if stored is not None and not stored.deleted and stored.custodian == DIRECTORY_CUSTODIAN else None


def referral_id(resource: dict[str, Any]) -> str | None:
    """The referral business identifier a pathway resource carries."""
    return next((i["value"] for i in resource.get("identifier", []) if i.get("system") == REFERRAL_SYSTEM and i.get("value")), None)


def by_referral(repo: Repository, resource_type: str, referral: str) -> Stored | None:
    return first(repo, resource_type, [("identifier", [f"{REFERRAL_SYSTEM}|{referral}"])])


def task_kind(task: dict[str, Any]) -> str | None:
    """Which pathway workflow a Task belongs to (Task.code in the task-type system)."""
    return code_of(task.get("code"), TASK_TYPE_SYSTEM)


def task_for_request(repo: Repository, request_ref: str) -> Stored | None:
    """The Task whose focus is the ServiceRequest ``request_ref``."""
    return first(repo, "Task", [("focus", [request_ref])])


def organization_key(organization: dict[str, Any]) -> str | None:
    """The identifier an organisation acts under ("system|value"): ODS code, else partner id."""
    identifiers = {i.get("system"): i.get("value") for i in organization.get("identifier", []) if i.get("value")}
    for system in (ODS_SYSTEM, PARTNER_SYSTEM):
        if system in identifiers:
            return f"{system}|{identifiers[system]}"
    return None


def _organization(repo: Repository, reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Organization a reference names (directly, or as a PractitionerRole's organisation);
    a logical reference gives a stand-in carrying just its identifier."""
    if not reference:
        return None
    identifier = reference.get("identifier") or {}
    if identifier.get("system") and identifier.get("value"):
        return {"resourceType": "Organization", "identifier": [identifier]}
    kind, _, ident = str(reference.get("reference", "")).partition("/")
    if kind not in ("Organization", "PractitionerRole") or not ident:
        return None
    stored = directory_entry(repo, kind, ident)
    if stored is None:
        return None
    if kind == "PractitionerRole":
        return _organization(repo, stored.resource.get("organization"))
    return stored.resource


def _identifier_keys(organization: dict[str, Any]) -> frozenset[str]:
    return frozenset(f"{i.get('system')}|{i.get('value')}" for i in organization.get("identifier", []) if i.get("value"))


def organization_keys(repo: Repository, reference: dict[str, Any] | None) -> frozenset[str]:
    """Every "system|value" the organisation a reference names is known by."""
    return _identifier_keys(_organization(repo, reference) or {})


def acting_key(repo: Repository, reference: dict[str, Any] | None) -> str | None:
    """The identifier the organisation a reference names acts under, if it names one."""
    organization = _organization(repo, reference)
    return organization_key(organization) if organization else None


# Directory Organization id by acting identifier, asked on every referral: reading the
# remembered Organization back to check it still carries the identifier costs a tenth of
# the identifier search.
_directory_ids: dict[str, str] = {}


def organization_ref(repo: Repository, key: str) -> dict[str, Any]:
    """A reference to the organisation acting as ``key`` ("system|value"): literal when it is in
    the directory, else logical by identifier."""
    remembered = _directory_ids.get(key)
    if remembered is not None:
        stored = directory_entry(repo, "Organization", remembered)
        if stored is not None and key in _identifier_keys(stored.resource):
            return {"reference": stored.reference}
    found = next((s for _, s in repo.search("Organization", [("identifier", [key])], custodians=[DIRECTORY_CUSTODIAN], batch=1)), None)
    if found is not None:
        _directory_ids[key] = found.id
        return {"reference": found.reference}
    system, _, value = key.partition("|")
    return {"identifier": {"system": system, "value": value}}


def directory_key(repo: Repository, organization_id: str) -> str | None:
    """The acting identifier of ``Organization/{organization_id}`` from the directory."""
    stored = directory_entry(repo, "Organization", organization_id)
    return organization_key(stored.resource) if stored is not None else None


def care_team(care_plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The plan's care team members by role (key-worker, community-team, advocate)."""
    members: dict[str, list[dict[str, Any]]] = {}
    for contained in care_plan.get("contained", []):
        if contained.get("resourceType") != "CareTeam":
            continue
        for participant in contained.get("participant", []):
            for role in participant.get("role", []):
                code = code_of(role, CARE_TEAM_ROLE_SYSTEM)
                if code and participant.get("member"):
                    members.setdefault(code, []).append(participant["member"])
    return members
