"""The consent-driven access policy: agreements AND the person's consent decide.

For every resource about a person that the caller does not hold itself, the
policy asks ``consent.decide`` whether an agreement between the holder and the
caller's organisation, and the person's own Consents, permit this recipient to
see this resource for this purpose. Decisions are cached by everything they
depend on (the person's consent versions, the agreement set, the recipient,
the purpose, the holder and the resource's labels), so a changed consent or
agreement is never answered from a stale cache, in this process or another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent
from gateway.audit.ledger import disclosure
from gateway.auth.tokens import Principal
from gateway.directory import current_agreements as load_agreements
from gateway.fhir.access import DIRECTORY_TYPES, WORKFLOW_PARTICIPANTS, Caller, CustodianPolicy, Visible
from gateway.sharing.break_glass import active_grant
from gateway.store.indexing import patient_of
from gateway.store.crypto import Keyring
from gateway.store.models import AgreementRow
from gateway.store.repository import Repository, Stored, now_utc

CODE_ELEMENTS = ("code", "medicationCodeableConcept", "category", "type")


def _identifier(pair: str) -> dict[str, str]:
    system, _, value = pair.partition("|")
    return {"system": system, "value": value}


def data_of(stored: Stored, resource: dict[str, Any]) -> dict[str, Any]:
    """The DESIGN §8 ``data`` description of one resource: its labels, type and codes."""
    meta = resource.get("meta", {})
    codes = []
    for element in CODE_ELEMENTS:
        value = resource.get(element)
        for concept in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            codes += [{"system": c.get("system"), "code": c.get("code")} for c in concept.get("coding", []) if c.get("code")]
    return {
        "categories": sorted(stored.categories),
        "security": [{"system": s.get("system"), "code": s.get("code")} for s in meta.get("security", [])],
        "classes": [stored.type],
        "codes": codes,
    }


@dataclass
class PersonContext:
    """What decisions about one person need: identifiers and consents, with a cache key."""

    patient: str
    identifiers: list[dict[str, str]]
    consents: list[dict[str, Any]]
    key: tuple[tuple[str, int], ...]


def simulated_caller(recipient: str, purpose: str, organization: str | None) -> Caller:
    """The caller a recipient would be: an organisation ("system|value"), or a carer
    (``RelatedPerson/{id}``) through the portal of ``organization``."""
    acting_for = recipient if recipient.startswith("RelatedPerson/") else None
    org = organization if acting_for else recipient
    if not org:
        raise ValueError("a carer's view needs the organisation of the carers' portal they use")
    principal = Principal(f"simulated:{recipient}", org, frozenset(), frozenset(), "portal" if acting_for else "system", 0)
    return Caller(principal, purpose, acting_for)


class ConsentPolicy(CustodianPolicy):
    """Agreement + consent decisions for every disclosure; own and directory data pass.
    Who may change what is the custodian policy's rule."""

    def __init__(self, keyring: Keyring, cache_size: int = 50_000) -> None:
        super().__init__()
        self.keyring = keyring
        self._decisions: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._agreements: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None
        self._org_identifiers: dict[str, list[dict[str, str]]] = {}

    # --- what may be seen -------------------------------------------------------------

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        return None

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored], channel: str = "api") -> Visible:
        results: list[dict[str, Any] | None] = [None] * len(stored)
        withheld = False
        disclosed: dict[str, list[tuple[Stored, dict[str, Any]]]] = {}
        people: dict[str, PersonContext] = {}
        for index, item in enumerate(stored):
            resource = item.resource
            if self._passes_without_consent(session, caller, item, resource):
                results[index] = resource
                continue
            patient = item.patient or patient_of(resource)
            if patient is None:
                withheld = True
                continue
            person = people.get(patient) or people.setdefault(patient, self._person(session, patient))
            grant = active_grant(session, caller.principal.client_id, patient) if caller.purpose == "ETREAT" else None
            if grant is not None:
                results[index] = resource
                disclosed.setdefault(patient, []).append((item, {"break_glass": grant.id}))
                continue
            decision = self.decide(session, caller, person, item.custodian, data_of(item, resource))
            if decision["decision"] == "permit" and not consent.redact([resource], decision).withheld:
                results[index] = resource
                disclosed.setdefault(patient, []).append((item, decision))
            else:
                withheld = True
        return Visible(results, withheld, self._disclosures(caller, disclosed, channel))

    def simulate(self, session: Session, caller: Caller, patient: str) -> tuple[list[Stored], Visible]:
        """What ``caller`` would receive of everything held about ``patient`` today (nothing is recorded)."""
        stored = [s for _, s in Repository(session, self.keyring).search(None, patient=patient)]
        return stored, self.visible(session, caller, stored, channel="simulation")

    # --- decisions -------------------------------------------------------------------

    def _passes_without_consent(self, session: Session, caller: Caller, item: Stored, resource: dict[str, Any]) -> bool:
        if item.type in DIRECTORY_TYPES:
            return True
        if caller.acting_for is not None:
            return False  # people acting through a portal see only what the person consented to
        if item.custodian == caller.organization:
            return True
        return item.type in WORKFLOW_PARTICIPANTS and self.participants.names(session, item.type, resource, caller.organization)

    def decide(self, session: Session, caller: Caller, person: PersonContext, holder: str, data: dict[str, Any]) -> dict[str, Any]:
        """The cached decision for this recipient, purpose, holder and data."""
        agreements_key, agreements = self.current_agreements(session)
        actor = self.actor_identifiers(session, caller)
        key = (
            person.key,
            agreements_key,
            tuple(sorted((a["system"], a["value"]) for a in actor)),
            caller.purpose,
            holder,
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
        )
        decision = self._decisions.get(key)
        if decision is None:
            request = {
                "patient": person.identifiers,
                "actor": actor,
                "purpose": caller.purpose,
                "data": data,
                "holder": _identifier(holder),
                "at": now_utc().isoformat(),
            }
            decision = consent.decide(request, person.consents, agreements)
            self._decisions[key] = decision
            if len(self._decisions) > self._cache_size:
                self._decisions.popitem(last=False)
        return decision

    def _person(self, session: Session, patient: str) -> PersonContext:
        repo = Repository(session, self.keyring)
        identifiers = [{"system": "reference", "value": patient}]
        current = repo.current("Patient", patient.split("/", 1)[1])
        if current is not None:
            identifiers += [
                {"system": i["system"], "value": i["value"]}
                for i in current.resource.get("identifier", [])
                if i.get("system") and i.get("value")
            ]
        consents = [s.resource for _, s in repo.search("Consent", patient=patient, batch=50)]
        key = tuple(sorted((c["id"], int(c["meta"]["versionId"])) for c in consents))
        return PersonContext(patient, identifiers, consents, key)

    def current_agreements(self, session: Session) -> tuple[tuple[Any, ...], list[dict[str, Any]]]:
        """The current agreements with a marker that changes whenever they do."""
        marker = tuple(session.execute(select(func.count(), func.max(AgreementRow.loaded))).one())
        if self._agreements is None or self._agreements[0] != marker:
            self._agreements = (marker, load_agreements(session))
        return self._agreements

    def actor_identifiers(self, session: Session, caller: Caller) -> list[dict[str, str]]:
        """Everything the recipient is known by: all its organisation's identifiers, and
        the person it acts for (by reference and by that resource's identifiers)."""
        actor = list(self._organization_identifiers(session, caller.organization))
        if caller.acting_for:
            actor.append({"system": "reference", "value": caller.acting_for})
            kind, _, ident = caller.acting_for.partition("/")
            person = Repository(session, self.keyring).current(kind, ident)
            if person is not None:
                actor += [
                    {"system": i["system"], "value": i["value"]}
                    for i in person.resource.get("identifier", [])
                    if i.get("system") and i.get("value")
                ]
        return actor

    def _organization_identifiers(self, session: Session, organization: str) -> list[dict[str, str]]:
        cached = self._org_identifiers.get(organization)
        if cached is None:
            cached = [_identifier(organization)]
            system, _, value = organization.partition("|")
            repo = Repository(session, self.keyring)
            for _, org in repo.search("Organization", [("identifier", [organization])], batch=5):
                cached += [
                    {"system": i["system"], "value": i["value"]}
                    for i in org.resource.get("identifier", [])
                    if i.get("system") and (i["system"], i.get("value")) != (system, value)
                ]
            self._org_identifiers[organization] = cached
        return cached

    # --- the ledger ----------------------------------------------------------------

    def _disclosures(self, caller: Caller, disclosed: dict[str, list[tuple[Stored, dict[str, Any]]]], channel: str) -> list[dict[str, Any]]:
        moment = now_utc()
        return [
            disclosure(
                at=moment,
                patient=patient,
                recipient=caller.organization,
                acting_for=caller.acting_for,
                client_id=caller.principal.client_id,
                purpose=caller.purpose,
                channel=channel,
                resources=[f"{s.reference}/_history/{s.version_id}" for s, _ in items],
                agreements=sorted({a for _, d in items for a in d.get("agreements", [])}),
                consents=sorted({c for _, d in items for c in d.get("consents", [])}),
                break_glass=next((d["break_glass"] for _, d in items if "break_glass" in d), None),
            )
            for patient, items in disclosed.items()
        ]
