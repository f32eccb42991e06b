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

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent
from gateway.audit.ledger import disclosure
from gateway.auth.tokens import Principal
from gateway.directory import consent_recorders, current_agreements as load_agreements
from gateway.fhir.access import DIRECTORY_CUSTODIAN, DIRECTORY_TYPES, WORKFLOW_PARTICIPANTS, Caller, CustodianPolicy, Visible
from gateway.sharing.break_glass import active_grant
from gateway.sharing.people import Bounded, consent_versions, current_version
from gateway.sharing.skeleton import is_open, skeleton
from gateway.store.indexing import patient_of
from gateway.store.crypto import Keyring
from gateway.store.hot import Hot
from gateway.store.models import AgreementRow, ConfDocumentRow
from gateway.store.repository import Repository, Stored, now_utc

CODE_ELEMENTS = ("code", "medicationCodeableConcept", "category", "type")
# What changes whenever the agreements, or the partners allowed to record consent grants, do
# (both in one statement: every decision needs both).
_CONF_MARKERS = Hot(
    select(
        func.count(),
        func.max(AgreementRow.loaded),
        select(func.max(ConfDocumentRow.version)).where(ConfDocumentRow.name == "partners.yaml").scalar_subquery(),
    ).select_from(AgreementRow)
)


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
    """What decisions about one person need: identifiers and the consents that count, with a
    cache key, and the reasons any of their Consents were set aside."""

    patient: str
    identifiers: list[dict[str, str]]
    consents: list[dict[str, Any]]
    key: tuple[tuple[str, int], ...]
    ignored: list[str] = field(default_factory=list)


def grants(consent: dict[str, Any]) -> bool:
    """Whether a Consent permits anything (any provision, at any depth, of type permit)."""
    pending = [consent.get("provision")]
    while pending:
        provision = pending.pop()
        if not isinstance(provision, dict):
            continue
        if provision.get("type") == "permit":
            return True
        nested = provision.get("provision")
        pending.extend(nested if isinstance(nested, list) else [])
    return False


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
    Who may change what is the custodian policy's rule.

    A portal acting for a person (``X-Pathway-Acting-For``) sees data about that one person
    only, decided with the acting person as the recipient; its organisation must still be
    covered by an agreement. A caller learns that something was withheld about a person only
    when it may see part of that person's data, so nothing answers "does this person exist".
    """

    def __init__(self, keyring: Keyring, cache_size: int = 50_000) -> None:
        super().__init__()
        self.keyring = keyring
        self._decisions: OrderedDict[tuple[Any, ...], tuple[dict[str, Any], float]] = OrderedDict()
        self._cache_size = cache_size
        self._agreements: tuple[tuple[Any, ...], list[dict[str, Any]]] | None = None
        self._recorders: tuple[Any, frozenset[str]] | None = None
        self._org_identifiers: dict[str, list[dict[str, str]]] = {}
        self._people: Bounded[PersonContext] = Bounded(20_000)

    # --- what may be seen -------------------------------------------------------------

    def search_custodians(self, caller: Caller, resource_type: str) -> list[str] | None:
        return None

    def visible(self, session: Session, caller: Caller, stored: Sequence[Stored], channel: str = "api") -> Visible:
        results: list[dict[str, Any] | None] = [None] * len(stored)
        view = _View(self, session, caller)
        disclosed: dict[str, list[tuple[Stored, dict[str, Any]]]] = {}
        for index, item in enumerate(stored):
            resource = item.resource
            shown, patient, grounds = view.see(item, resource)
            if shown is not None:
                results[index] = shown
                if grounds is not None and patient is not None:
                    disclosed.setdefault(patient, []).append((item, grounds))
        return Visible(results, view.withheld(), self._disclosures(caller, disclosed, channel))

    def simulate(self, session: Session, caller: Caller, patient: str) -> tuple[list[Stored], Visible]:
        """What ``caller`` would receive of everything held about ``patient`` today (nothing is recorded)."""
        stored = [s for _, s in Repository(session, self.keyring).search(None, patient=patient)]
        return stored, self.visible(session, caller, stored, channel="simulation")

    # --- decisions -------------------------------------------------------------------

    def passes_without_consent(self, caller: Caller, item: Stored) -> bool:
        """Directory entries and what the caller holds need no consent (workflow records naming
        the caller do: without it they show only as a skeleton, see :meth:`skeleton_allowed`)."""
        if item.type in DIRECTORY_TYPES:
            return True
        return caller.acting_for is None and item.custodian == caller.organization

    def skeleton_allowed(self, session: Session, caller: Caller, item: Stored, resource: dict[str, Any], agreements: list[dict[str, Any]]) -> bool:
        """Whether the caller may see the skeleton of a workflow record it may not see in full:
        the record names it, is still open, and an agreement between the caller's organisation and
        the holder is in force (for any purpose). Portals never see skeletons."""
        return (
            caller.acting_for is None
            and item.type in WORKFLOW_PARTICIPANTS
            and is_open(item.type, resource)
            and self.participants.names(session, item.type, resource, caller.organization)
            and bool(consent.agreements_in_force(agreements, _identifier(item.custodian), self.organization_identifiers(session, caller.organization), now_utc().isoformat()))
        )

    def decide(
        self,
        caller: Caller,
        person: PersonContext,
        holder: str,
        data: dict[str, Any],
        agreements: tuple[tuple[Any, ...], list[dict[str, Any]]],
        recipient: tuple[list[dict[str, str]], list[dict[str, str]] | None],
    ) -> dict[str, Any]:
        """The decision for this recipient, purpose, holder and data, from the cache while it
        holds; ``agreements`` and ``recipient`` as :meth:`current_agreements` and
        :meth:`recipient` give them (looked up once per batch of resources)."""
        agreements_key, current = agreements
        actor, organization = recipient
        key = (
            person.key,
            agreements_key,
            tuple(sorted((a["system"], a["value"]) for a in actor)),
            caller.organization if caller.acting_for else None,
            caller.purpose,
            holder,
            orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
        )
        now = time.time()
        cached = self._decisions.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        request = {
            "patient": person.identifiers,
            "actor": actor,
            "purpose": caller.purpose,
            "data": data,
            "holder": _identifier(holder),
            "at": now_utc().isoformat(),
        }
        if organization is not None:
            request["organization"] = organization
        decision = consent.decide(request, person.consents, current)
        if person.ignored:
            decision = {**decision, "reasons": [*person.ignored, *decision["reasons"]]}
        until = consent.until_epoch(decision)
        self._decisions[key] = (decision, until if until is not None else float("inf"))
        self._decisions.move_to_end(key)
        if len(self._decisions) > self._cache_size:
            self._decisions.popitem(last=False)
        return decision

    def person(self, session: Session, patient: str, recorders: frozenset[str]) -> PersonContext:
        """The person's identifiers and the Consents that count: grants only from the
        ``recorders`` (:meth:`consent_recorders`), refusals from anyone. Cached by the
        versions of their Patient record and Consents (read first, without bodies)."""
        connection = session.connection()
        ident = patient.split("/", 1)[1]
        versions = (current_version(connection, "Patient", ident), consent_versions(connection, patient))
        cached = self._people.get((patient, versions, recorders))
        if cached is not None:
            return cached
        repo = Repository(session, self.keyring)
        identifiers = [{"system": "reference", "value": patient}]
        current = repo.current("Patient", ident)
        if current is not None:
            identifiers += [
                {"system": i["system"], "value": i["value"]}
                for i in current.resource.get("identifier", [])
                if i.get("system") and i.get("value")
            ]
        consents, ignored = [], []
        stored_consents = [s for s in repo.current_many("Consent", [id_ for id_, _ in versions[1]]) if not s.deleted]
        for stored in stored_consents:
            resource = stored.resource
            if stored.custodian in recorders or not grants(resource):
                consents.append(resource)
            else:
                ignored.append(f"{stored.reference} recorded by {stored.custodian}, which is not authorised to record "
                               "consent grants → ignored")
        key = tuple(sorted((c["id"], int(c["meta"]["versionId"])) for c in consents)) + tuple((r, -1) for r in ignored)
        context = PersonContext(patient, identifiers, consents, key, ignored)
        read = (current.version_id if current is not None else None, tuple((s.id, s.version_id) for s in stored_consents))
        # Cached only when the bodies are the versions listed (a write may land between the two reads).
        return self._people.put((patient, versions, recorders), context) if read == versions else context

    def conf(self, session: Session) -> tuple[tuple[tuple[Any, ...], list[dict[str, Any]]], frozenset[str]]:
        """(:meth:`current_agreements`, :meth:`consent_recorders`), reloaded when their markers change."""
        count, loaded, partners = _CONF_MARKERS.rows(session.connection())[0]
        if self._agreements is None or self._agreements[0] != (count, loaded):
            self._agreements = ((count, loaded), load_agreements(session))
        if self._recorders is None or self._recorders[0] != partners:
            self._recorders = (partners, consent_recorders(session))
        return self._agreements, self._recorders[1]

    def consent_recorders(self, session: Session) -> frozenset[str]:
        """The identifiers of organisations ``conf/`` authorises to record consent grants."""
        return self.conf(session)[1]

    def current_agreements(self, session: Session) -> tuple[tuple[Any, ...], list[dict[str, Any]]]:
        """The current agreements with a marker that changes whenever they do."""
        return self.conf(session)[0]

    def recipient(self, session: Session, caller: Caller) -> tuple[list[dict[str, str]], list[dict[str, str]] | None]:
        """``(actor, organization)`` of a decision request. An organisation is known by its
        directory entry's identifiers alone. A portal's recipient is the person it acts for (by
        reference and that resource's identifiers); its organisation, which the agreement must
        cover, is given apart so that grants to the organisation do not reach its users."""
        organization = self.organization_identifiers(session, caller.organization)
        if not caller.acting_for:
            return organization, None
        actor = [{"system": "reference", "value": caller.acting_for}]
        kind, _, ident = caller.acting_for.partition("/")
        person = Repository(session, self.keyring).current(kind, ident)
        if person is not None and not person.deleted:
            actor += [
                {"system": i["system"], "value": i["value"]}
                for i in person.resource.get("identifier", [])
                if i.get("system") and i.get("value")
            ]
        return actor, organization

    def organization_identifiers(self, session: Session, organization: str) -> list[dict[str, str]]:
        """Every identifier of the directory entry an organisation acts under ("system|value");
        nothing a partner publishes counts."""
        cached = self._org_identifiers.get(organization)
        if cached is None:
            cached = [_identifier(organization)]
            system, _, value = organization.partition("|")
            repo = Repository(session, self.keyring)
            for _, org in repo.search("Organization", [("identifier", [organization])], custodians=[DIRECTORY_CUSTODIAN], batch=5):
                cached += [
                    {"system": i["system"], "value": i["value"]}
                    for i in org.resource.get("identifier", [])
                    if i.get("system") and (i["system"], i.get("value")) != (system, value)
                ]
            self._org_identifiers[organization] = cached
        return cached

    def portal_person(self, session: Session, caller: Caller) -> str | None:
        """The Patient a portal call is about: the one the acting RelatedPerson is related to,
        or the acting Patient; None when the acting person is not known."""
        kind, _, ident = (caller.acting_for or "").partition("/")
        acting = Repository(session, self.keyring).current(kind, ident) if kind in ("Patient", "RelatedPerson") else None
        if acting is None or acting.deleted:
            return None
        return f"Patient/{ident}" if kind == "Patient" else patient_of(acting.resource)

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


class _View:
    """One ``visible`` call's working state: people looked up once, what was shown and
    withheld per person, the portal's person."""

    def __init__(self, policy: ConsentPolicy, session: Session, caller: Caller) -> None:
        self.policy, self.session, self.caller = policy, session, caller
        self.people: dict[str, PersonContext] = {}
        self.shown: set[str] = set()
        self.withheld_about: set[str] = set()
        self.withheld_other = False
        self.portal_person = policy.portal_person(session, caller) if caller.acting_for else None

    @cached_property
    def conf(self) -> tuple[tuple[tuple[Any, ...], list[dict[str, Any]]], frozenset[str]]:
        return self.policy.conf(self.session)

    @property
    def recorders(self) -> frozenset[str]:
        return self.conf[1]

    @property
    def agreements(self) -> tuple[tuple[Any, ...], list[dict[str, Any]]]:
        return self.conf[0]

    @cached_property
    def recipient(self) -> tuple[list[dict[str, str]], list[dict[str, str]] | None]:
        return self.policy.recipient(self.session, self.caller)

    def see(self, item: Stored, resource: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, dict[str, Any] | None]:
        """(what is shown of it or None, the person it is about, the grounds to record as a
        disclosure or None). A workflow record naming the caller that the decision does not
        permit may show as its skeleton, which discloses nothing clinical."""
        caller = self.caller
        patient = item.patient or patient_of(resource)
        if item.type in DIRECTORY_TYPES:
            return resource, None, None
        if caller.acting_for is not None and (patient is None or patient != self.portal_person):
            return None, patient, None  # a portal sees one person; others are not even withheld
        if self.policy.passes_without_consent(caller, item):
            if patient is not None:
                self.shown.add(patient)
            return resource, patient, None
        grounds = self._grounds(item, resource, patient) if patient is not None else None
        if grounds is not None:
            self.shown.add(patient)  # type: ignore[arg-type]
            return resource, patient, grounds
        if self.policy.skeleton_allowed(self.session, caller, item, resource, self.agreements[1]):
            if patient is not None:
                self.shown.add(patient)
            return skeleton(resource), patient, None
        if patient is None:
            self.withheld_other = True
        else:
            self.withheld_about.add(patient)
        return None, patient, None

    def _grounds(self, item: Stored, resource: dict[str, Any], patient: str) -> dict[str, Any] | None:
        """The break-glass grant or permitting decision under which the caller may see this, if any."""
        caller = self.caller
        if caller.purpose == "ETREAT" and caller.acting_for is None:
            grant = active_grant(self.session, caller.principal.client_id, patient)
            if grant is not None:
                return {"break_glass": grant.id}
        person = self.people.get(patient) or self.people.setdefault(patient, self.policy.person(self.session, patient, self.recorders))
        decision = self.policy.decide(caller, person, item.custodian, data_of(item, resource), self.agreements, self.recipient)
        if decision["decision"] == "permit" and not consent.redact([resource], decision).withheld:
            return decision
        return None

    def withheld(self) -> bool:
        """Whether to warn that something was withheld: only about people the caller may see
        part of (here, or their Patient record), so the warning never tells that a person exists."""
        if self.withheld_other:
            return True
        for patient in list(self.withheld_about):
            if patient in self.shown or self._sees_patient_record(patient):
                return True
        return False

    def _sees_patient_record(self, patient: str) -> bool:
        record = Repository(self.session, self.policy.keyring).current("Patient", patient.split("/", 1)[1])
        if record is None or record.deleted:
            return False
        shown, _, _ = self.see(record, record.resource)
        return shown is not None
