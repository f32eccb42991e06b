"""Synthetic people for the demo partnership, one or more at every pathway stage (DESIGN §1).

Every person is made up: names come from small pools, CHI numbers are valid but generated
(``mappings.identifiers.make_chi``), phone numbers are in Ofcom's range reserved for drama
(07700 900xxx). The same seed gives the same people and the same details; ids are keyed
like ingested ones (``adapters.common.IdScheme``: a Patient's id from its CHI under the
installation's key), so they are the same for the same seed and key, and differ between
installations. ``today`` only moves the dates so that consents and prescriptions are
current when the demo runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from adapters.common import IdScheme
from gateway.conf import Conf, Organization, Person
from mappings.identifiers import CHI_SYSTEM, make_chi, source_system

STAGE_SYSTEM = "https://pathway.scot/CodeSystem/stage"
DATA_CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/data-category"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PATHWAY_PURPOSE_SYSTEM = "https://pathway.scot/CodeSystem/purpose"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SNOMED = "http://snomed.info/sct"
CONDITION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
CONSENT_WITNESS_EXTENSION = "https://pathway.scot/StructureDefinition/consent-witness"

DEMO_PERSON_SYSTEM = source_system("demo", "person")
DEMO_CARER_SYSTEM = source_system("demo", "carer")

# Where each demo person is heading: (stage, early exit, facility slot, carer, consent pattern).
# Facility slot 0/1 picks the first/second rehab facility in conf; None means not chosen yet.
# Consent patterns: none; pathway = opt-in for the advocacy service, community team and voluntary
# agency (plus a carer grant when there is a carer); facility = pathway plus the chosen facility
# with mental health withheld; blanket = share with anyone, domestic abuse withheld; withdrawn =
# a facility opt-in since made inactive; opt-out = share with no one.
_SCENARIOS: tuple[tuple[str, bool, int | None, str | None, str], ...] = (
    ("referral", False, None, None, "none"),
    ("initial-meeting", False, None, None, "pathway"),
    ("resource-allocation", False, None, "MTH", "pathway"),
    ("alternative-pathway", False, None, None, "pathway"),
    ("assessment", False, 0, "DAU", "facility"),
    ("preparation", False, 1, None, "facility"),
    ("residential", False, 0, "WIFE", "facility"),
    ("residential", False, 1, None, "facility"),
    ("community-recovery", False, 0, "FTH", "blanket"),
    ("community-recovery", True, 0, "SIS", "facility"),
    ("closed", False, 1, None, "withdrawn"),
    ("referral", False, None, None, "opt-out"),
)
STAGES = (
    "referral", "initial-meeting", "resource-allocation", "alternative-pathway", "assessment",
    "preparation", "residential", "community-recovery", "closed",
)
# How long ago each stage's person was referred, in days (the pathway takes months).
_DAYS_SINCE_REFERRAL = {
    "referral": 3, "initial-meeting": 12, "resource-allocation": 26, "alternative-pathway": 40,
    "assessment": 60, "preparation": 120, "residential": 170, "community-recovery": 250, "closed": 300,
}
_CARER_RELATIONSHIPS = {
    "MTH": ("mother", "female"), "FTH": ("father", "male"), "WIFE": ("wife", "female"),
    "SIS": ("sister", "female"), "DAU": ("daughter", "female"),
}

_GIVEN = {
    "male": ["Craig", "Stuart", "Gary", "Scott", "Derek", "Kevin", "Ross", "Jamie", "Barry", "Lewis"],
    "female": ["Lisa", "Gemma", "Claire", "Nicola", "Donna", "Lorraine", "Kerry", "Amy", "Stacey", "Leanne"],
}
_FAMILY = ["Robertson", "Duncan", "Milne", "Ogilvie", "Fraser", "Paterson", "Reid", "Doig", "Kidd",
           "Cargill", "Bruce", "Hendry", "Nicoll", "Brand", "Mathers", "Whyte", "Scrymgeour", "Lowden"]
_STREETS = ["Baxter Park Terrace", "Dens Road", "Strathmartine Road", "Arbroath Road", "Charleston Drive",
            "Kirkton Road", "Fintry Place", "Whitfield Crescent", "Ardler Court", "Douglas Terrace",
            "Mid Craigie Road", "Clepington Court", "Lawside Avenue", "Menzieshill Road"]
_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

# SNOMED CT disorders (code, display); the first of each person's is the substance use.
OPIOID_DEPENDENCE = ("75544000", "Opioid dependence")
ALCOHOLISM = ("7200002", "Alcoholism")
_OTHER_CONDITIONS = [
    ("50711007", "Viral hepatitis type C"),
    ("35489007", "Depressive disorder"),
    ("197480006", "Anxiety disorder"),
    ("13645005", "Chronic obstructive lung disease"),
]
ORAL_ROUTE = ("26643006", "Oral route")
SUBLINGUAL_ROUTE = ("37839007", "Sublingual route")


@dataclass(frozen=True)
class DemoPerson:
    """One synthetic person: their resources and where the demo walks them on the pathway."""

    patient: dict[str, Any]
    related: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    clinical: list[dict[str, Any]]
    stage: str  # a code of https://pathway.scot/CodeSystem/stage
    early_exit: bool = False  # reached ``stage`` by an unplanned discharge from residential rehab
    facility: str | None = None  # organisation id of the chosen rehab facility, once chosen
    key_worker: str | None = None  # person id (conf people) of their key worker
    referral_date: str = ""  # when the demo's referral is dated (ISO date)
    substances: tuple[str, ...] = ()  # the referral's substance codes (reports split by drugs/alcohol/both)
    referrer: str | None = None  # person id (conf people) who referred; None leaves the referral source unrecorded
    decision_days: int = 14  # referral to the resource allocation decision (the waits' treatment start)
    unavailable_days: int = 0  # a documented clock adjustment: days the person was unavailable

    @property
    def reference(self) -> str:
        return f"Patient/{self.patient['id']}"

    def resources(self) -> list[dict[str, Any]]:
        """All of this person's resources, Patient first, in an order safe to store."""
        return [self.patient, *self.related, *self.clinical, *self.consents]


def _meta(resource_id: str) -> dict[str, str]:
    """Where a demo resource came from (``meta.source``, docs/architecture.md)."""
    return {"source": f"https://pathway.scot/source/demo/{resource_id}"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _of_type(conf: Conf, kind: str) -> list[Organization]:
    found = [o for o in conf.organizations if o.type == kind]
    if not found:
        raise ValueError(f"the demo people need an organisation of type {kind} in conf/partners.yaml")
    return found


def _with_role(conf: Conf, role: str) -> list[Person]:
    found = [p for p in conf.people if p.role == role]
    if not found:
        raise ValueError(f"the demo people need a person with role {role} in conf/partners.yaml people")
    return found


def _named(conf: Conf, organization_id: str | None, fallback_type: str) -> Organization:
    named = conf.organization(organization_id) if organization_id else None
    return named or _of_type(conf, fallback_type)[0]


def _recipient(reference: dict[str, Any]) -> dict[str, Any]:
    """A consent provision actor: who may receive the information."""
    return {"role": _concept(PARTICIPATION_SYSTEM, "IRCP", "information recipient"), "reference": reference}


def _org_reference(org: Organization) -> dict[str, Any]:
    identifier = org.primary_identifier()
    return {
        "reference": f"Organization/{org.id}",
        "identifier": {"system": identifier.system, "value": identifier.value},
        "display": org.name,
    }


def _phone(rng: random.Random) -> str:
    return f"07700 900{rng.randrange(1000):03d}"


def _postcode(rng: random.Random) -> str:
    letters = "".join(rng.choice(_POSTCODE_LETTERS) for _ in range(2))
    return f"DD{rng.randint(1, 5)} {rng.randint(1, 9)}{letters}"


class _Builder:
    """Builds one seed's people; holds what every person shares (the partnership, dates)."""

    def __init__(self, conf: Conf, seed: int, today: date, ids: IdScheme | None) -> None:
        self.seed, self.today = seed, today
        self.rng = random.Random(seed)
        self.custodian = _named(conf, conf.pathway.rehab_team, "hscp")
        primary = self.custodian.primary_identifier()
        self.ids = ids or IdScheme.random(f"{primary.system}|{primary.value}")
        self.community = _named(conf, conf.pathway.community_team, "recovery-service")
        self.advocacy = _named(conf, conf.pathway.advocacy_service, "advocacy")
        self.agency = _named(conf, conf.pathway.alternative_pathway_agency, "third-sector")
        self.facilities = _of_type(conf, "rehab-facility")
        self.practices = _of_type(conf, "gp-practice")
        self.advocate = _with_role(conf, "advocate")[0]
        self.key_workers = _with_role(conf, "key-worker")
        self.used_names: set[tuple[str, str]] = set()

    def person(self, n: int) -> DemoPerson:
        stage, early_exit, facility_slot, carer_code, pattern = _SCENARIOS[n]
        rng = self.rng
        gender = rng.choice(["male", "female"])
        given, family = self._name(gender)
        born = date(rng.randint(1968, 2001), rng.randint(1, 12), rng.randint(1, 28))
        chi = make_chi(born, gender, rng.randrange(5))
        practice = self.practices[n % len(self.practices)]
        patient_id = self.ids.person(chi)
        patient = {
            "resourceType": "Patient",
            "id": patient_id,
            "meta": _meta(patient_id),
            "identifier": [
                {"system": CHI_SYSTEM, "value": chi},
                {"system": DEMO_PERSON_SYSTEM, "value": f"demo-{self.seed}-{n:02d}"},
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": _phone(rng), "use": "mobile"}],
            "gender": gender,
            "birthDate": born.isoformat(),
            "address": [
                {
                    "use": "home",
                    "line": [f"{rng.randint(1, 120)} {rng.choice(_STREETS)}"],
                    "city": "Dundee",
                    "district": "Dundee City",
                    "postalCode": _postcode(rng),
                    "country": "GB",
                }
            ],
            "generalPractitioner": [{"reference": f"Organization/{practice.id}", "display": practice.name}],
        }
        referred = self.today - timedelta(days=_DAYS_SINCE_REFERRAL[stage] + rng.randint(0, 6))
        facility = self.facilities[facility_slot % len(self.facilities)] if facility_slot is not None else None
        related = [self._carer(n, patient, family, carer_code)] if carer_code else []
        consents = self._consents(n, patient, pattern, facility, related, referred, stage)
        clinical = self._clinical(n, patient, practice, referred)
        opioids = clinical[0]["code"]["coding"][0]["code"] == OPIOID_DEPENDENCE[0]  # the primary diagnosis
        substances = ("opioids", "alcohol") if opioids and n % 4 == 1 else ("opioids",) if opioids else ("alcohol",)
        key_worker = self.key_workers[n % len(self.key_workers)].id
        return DemoPerson(
            patient=patient,
            related=related,
            consents=consents,
            clinical=clinical,
            stage=stage,
            early_exit=early_exit,
            facility=facility.id if facility else None,
            key_worker=key_worker,
            referral_date=referred.isoformat(),
            substances=substances,
            referrer=None if n == 1 else key_worker,
            decision_days=27 if n in (3, 6, 8) else 14,
            unavailable_days=10 if n == 8 else 0,
        )

    def _id(self, *parts: object) -> str:
        return self.ids.record("demo", self.seed, *parts)

    def _name(self, gender: str) -> tuple[str, str]:
        while True:
            name = (self.rng.choice(_GIVEN[gender]), self.rng.choice(_FAMILY))
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def _carer(self, n: int, patient: dict[str, Any], family: str, code: str) -> dict[str, Any]:
        relation, gender = _CARER_RELATIONSHIPS[code]
        carer_id = self._id("carer", n)
        return {
            "resourceType": "RelatedPerson",
            "id": carer_id,
            "meta": _meta(carer_id),
            "identifier": [{"system": DEMO_CARER_SYSTEM, "value": f"demo-{self.seed}-{n:02d}-carer"}],
            "active": True,
            "patient": {"reference": f"Patient/{patient['id']}"},
            "relationship": [_concept(ROLE_CODE_SYSTEM, code, relation)],
            "name": [{"use": "official", "family": family, "given": [self.rng.choice(_GIVEN[gender])]}],
            "gender": gender,
            "telecom": [{"system": "phone", "value": _phone(self.rng), "use": "mobile"}],
        }

    # -- consents ------------------------------------------------------------------------------

    def _consents(
        self,
        n: int,
        patient: dict[str, Any],
        pattern: str,
        facility: Organization | None,
        related: list[dict[str, Any]],
        referred: date,
        stage: str,
    ) -> list[dict[str, Any]]:
        if pattern == "none":
            return []
        signed = referred + timedelta(days=7)
        witnessed = stage not in ("referral", "initial-meeting")
        partners = [
            self._permit(self.advocacy, ["CAREMGT"]),
            self._permit(self.community, ["TREAT", "CAREMGT"]),
            self._permit(self.agency, ["CAREMGT"]),
        ]
        if pattern in ("facility", "withdrawn") and facility is not None:
            partners.append(self._permit(facility, ["TREAT", "CAREMGT"], nested=[_mental_health_deny()]))
        if pattern == "blanket":
            root = self._root("permit", signed, nested=[_domestic_abuse_deny()])
        elif pattern == "opt-out":
            root = self._root("deny", signed)
        else:
            root = self._root("deny", signed, nested=partners)
        status = "inactive" if pattern == "withdrawn" else "active"
        policy = "OPTOUT" if pattern == "opt-out" else "OPTIN"
        consents = [self._consent(self._id("consent", n, "pathway"), patient, status, policy, signed, root, witnessed)]
        if related and pattern in ("pathway", "facility"):
            carer_grant = self._root("deny", signed, nested=[self._carer_permit(related[0])])
            consents.append(
                self._consent(
                    self._id("consent", n, "carer"), patient, "active", "OPTIN", signed, carer_grant, witnessed
                )
            )
        return consents

    def _root(self, kind: str, signed: date, nested: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        root: dict[str, Any] = {
            "type": kind,
            "period": {"start": signed.isoformat(), "end": (signed + timedelta(days=730)).isoformat()},
        }
        if nested:
            root["provision"] = list(nested)
        return root

    def _permit(self, org: Organization, purposes: list[str], nested: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        provision: dict[str, Any] = {
            "type": "permit",
            "actor": [_recipient(_org_reference(org))],
            "purpose": [_coding(PURPOSE_SYSTEM, p) for p in purposes],
        }
        if nested:
            provision["provision"] = list(nested)
        return provision

    def _carer_permit(self, carer: dict[str, Any]) -> dict[str, Any]:
        identifier = carer["identifier"][0]
        return {
            "type": "permit",
            "actor": [_recipient({"reference": f"RelatedPerson/{carer['id']}", "identifier": dict(identifier)})],
            "purpose": [_coding(PATHWAY_PURPOSE_SYSTEM, "carer-support")],
            "code": [_concept(DATA_CATEGORY_SYSTEM, "pathway-progress")],
        }

    def _consent(
        self,
        consent_id: str,
        patient: dict[str, Any],
        status: str,
        policy: str,
        signed: date,
        root: dict[str, Any],
        witnessed: bool,
    ) -> dict[str, Any]:
        chi = patient["identifier"][0]
        consent: dict[str, Any] = {
            "resourceType": "Consent",
            "id": consent_id,
            "meta": _meta(consent_id),
            "status": status,
            "scope": _concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
            "category": [_concept("http://loinc.org", "59284-0", "Patient Consent")],
            "patient": {"reference": f"Patient/{patient['id']}", "identifier": dict(chi)},
            "dateTime": f"{signed.isoformat()}T10:30:00Z",
            "performer": [{"reference": f"Patient/{patient['id']}"}],
            "organization": [{"reference": f"Organization/{self.custodian.id}", "display": self.custodian.name}],
            "policyRule": _concept(ACT_CODE_SYSTEM, policy),
            "provision": root,
        }
        if witnessed:
            consent["verification"] = [
                {
                    "extension": [
                        {
                            "url": CONSENT_WITNESS_EXTENSION,
                            "valueReference": {"reference": f"PractitionerRole/{self.advocate.id}", "display": self.advocate.name.text},
                        }
                    ],
                    "verified": True,
                    "verifiedWith": {"reference": f"Patient/{patient['id']}"},
                    "verificationDate": f"{signed.isoformat()}T10:30:00Z",
                }
            ]
        return consent

    # -- clinical ------------------------------------------------------------------------------

    def _clinical(self, n: int, patient: dict[str, Any], practice: Organization, referred: date) -> list[dict[str, Any]]:
        rng = self.rng
        opioids = rng.random() < 0.7
        primary = OPIOID_DEPENDENCE if opioids else ALCOHOLISM
        onset = referred - timedelta(days=365 * rng.randint(3, 15))
        diagnoses = [primary, rng.choice(_OTHER_CONDITIONS)]
        conditions = [self._condition(n, i, patient, code, onset + timedelta(days=200 * i)) for i, code in enumerate(diagnoses)]
        started = referred - timedelta(days=rng.randint(60, 900))
        if opioids and n % 3 < 2:  # some start OST when they present (MAT 1): the same day or two days on
            started = referred + timedelta(days=2 * (n % 3))
        medication = self._medication(n, patient, practice, conditions[0], opioids, started)
        return [*conditions, medication]

    def _condition(self, n: int, position: int, patient: dict[str, Any], code: tuple[str, str], onset: date) -> dict[str, Any]:
        condition_id = self._id("condition", n, position)
        return {
            "resourceType": "Condition",
            "id": condition_id,
            "meta": _meta(condition_id),
            "clinicalStatus": _concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "verificationStatus": _concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
            "category": [_concept(CONDITION_CATEGORY_SYSTEM, "problem-list-item", "Problem List Item")],
            "code": _concept(SNOMED, *code),
            "subject": {"reference": f"Patient/{patient['id']}"},
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
        }

    def _medication(
        self, n: int, patient: dict[str, Any], practice: Organization, reason: dict[str, Any], opioids: bool, started: date
    ) -> dict[str, Any]:
        rng = self.rng
        if not opioids:
            product, dose, route = "Thiamine 100mg tablets", "One tablet three times a day", ORAL_ROUTE
        elif rng.random() < 0.6:
            mg = rng.choice([40, 50, 60, 70, 80])
            dose = f"{mg} ml ({mg} mg) once daily, supervised consumption"
            product, route = "Methadone 1mg/ml oral solution", ORAL_ROUTE
        else:
            mg = rng.choice([8, 12, 16])
            product, dose, route = "Buprenorphine sublingual tablets", f"{mg} mg once daily, supervised", SUBLINGUAL_ROUTE
        medication_id = self._id("medication", n)
        return {
            "resourceType": "MedicationStatement",
            "id": medication_id,
            "meta": _meta(medication_id),
            "status": "active",
            "medicationCodeableConcept": {"text": product},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "effectivePeriod": {"start": started.isoformat()},
            "dateAsserted": self.today.isoformat(),
            "informationSource": {"reference": f"Organization/{practice.id}", "display": practice.name},
            "reasonReference": [{"reference": f"Condition/{reason['id']}"}],
            "dosage": [
                {
                    "text": dose,
                    "route": _concept(SNOMED, *route),
                    "timing": {"repeat": {"frequency": 3 if not opioids else 1, "period": 1, "periodUnit": "d"}},
                }
            ],
        }


def _mental_health_deny() -> dict[str, Any]:
    return {
        "type": "deny",
        "securityLabel": [_coding(ACT_CODE_SYSTEM, "PSY"), _coding(ACT_CODE_SYSTEM, "MH")],
        "code": [_concept(DATA_CATEGORY_SYSTEM, "mental-health")],
    }


def _domestic_abuse_deny() -> dict[str, Any]:
    return {
        "type": "deny",
        "securityLabel": [_coding(ACT_CODE_SYSTEM, "SDV")],
        "code": [_concept(DATA_CATEGORY_SYSTEM, "domestic-abuse")],
    }


def demo_people(conf: Conf, seed: int = 7, today: date | None = None, ids: IdScheme | None = None) -> list[DemoPerson]:
    """The demo's synthetic people (12), deterministic for a seed and ``ids`` (the installation's
    id scheme, ``gateway.ingest.pipeline.id_scheme``; without it a random key); covers every pathway stage."""
    builder = _Builder(conf, seed, today or date.today(), ids)
    return [builder.person(n) for n in range(len(_SCENARIOS))]
