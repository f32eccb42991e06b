"""The demo's synthetic people: deterministic, valid FHIR, valid CHIs, every stage and consent pattern."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from consent import decide

from adapters.common import IdScheme
from gateway.conf import Conf, load_conf
from gateway.demo_people import STAGES, DemoPerson, demo_people
from mappings.identifiers import CHI_SYSTEM, ODS_SYSTEM, PARTNER_SYSTEM, chi_problem

TODAY = date(2026, 11, 23)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
IDS = IdScheme(bytes(range(32)), "https://fhir.nhs.uk/Id/ods-organization-code|S037")  # one installation's key


@pytest.fixture(scope="module")
def conf() -> Conf:
    return load_conf(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="module")
def people(conf: Conf) -> list[DemoPerson]:
    return demo_people(conf, seed=7, today=TODAY, ids=IDS)


def chi_of(person: DemoPerson) -> str:
    return next(i["value"] for i in person.patient["identifier"] if i["system"] == CHI_SYSTEM)


def walk(node: Any) -> list[dict[str, Any]]:
    """Every dict inside a resource (to find nested provisions and references)."""
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in walk(v)]
    return []


def test_same_seed_same_people(conf: Conf, people: list[DemoPerson]) -> None:
    assert demo_people(conf, seed=7, today=TODAY, ids=IDS) == people
    other = demo_people(conf, seed=8, today=TODAY, ids=IDS)
    assert [chi_of(p) for p in other] != [chi_of(p) for p in people]


def test_patient_ids_come_from_the_chi_under_the_installation_key(conf: Conf, people: list[DemoPerson]) -> None:
    assert [p.patient["id"] for p in people] == [IDS.person(chi_of(p)) for p in people]
    elsewhere = demo_people(conf, seed=7, today=TODAY, ids=IdScheme(bytes(32), IDS.scope))
    assert [chi_of(p) for p in elsewhere] == [chi_of(p) for p in people]
    ids_here = {r["id"] for p in people for r in p.resources()}
    assert ids_here.isdisjoint(r["id"] for p in elsewhere for r in p.resources())


def test_ids_do_not_move_with_the_date(conf: Conf, people: list[DemoPerson]) -> None:
    later = demo_people(conf, seed=7, today=date(2027, 5, 1), ids=IDS)
    assert [[r["id"] for r in p.resources()] for p in later] == [[r["id"] for r in p.resources()] for p in people]


def test_every_resource_is_valid_r4(people: list[DemoPerson]) -> None:
    for person in people:
        for resource in person.resources():
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_ids_are_unique_lowercase_uuids(people: list[DemoPerson]) -> None:
    ids = [r["id"] for p in people for r in p.resources()]
    assert len(ids) == len(set(ids))
    assert all(UUID.match(i) for i in ids)


def test_chi_numbers_are_valid_and_match_birth_date_and_sex(people: list[DemoPerson]) -> None:
    chis = [chi_of(p) for p in people]
    assert len(set(chis)) == len(chis)
    for person, chi in zip(people, chis):
        assert chi_problem(chi, person.patient["birthDate"], person.patient["gender"]) is None


def test_every_stage_is_covered_with_an_early_exit_and_an_alternative_pathway(people: list[DemoPerson]) -> None:
    assert {p.stage for p in people} == set(STAGES)
    early = [p for p in people if p.early_exit]
    assert len(early) == 1 and early[0].stage == "community-recovery" and early[0].facility is not None
    assert [p.stage for p in people].count("alternative-pathway") == 1
    for person in people:
        if person.stage in ("residential", "community-recovery", "closed"):
            assert person.facility is not None


def test_references_point_at_the_partnership_and_the_person(conf: Conf, people: list[DemoPerson]) -> None:
    for person in people:
        (gp,) = person.patient["generalPractitioner"]
        practice = conf.organization(gp["reference"].removeprefix("Organization/"))
        assert practice is not None and practice.type == "gp-practice"
        assert conf.person(person.key_worker or "").role == "key-worker"  # type: ignore[union-attr]
        for resource in [*person.related, *person.consents, *person.clinical]:
            subject = resource.get("patient") or resource.get("subject")
            assert subject["reference"] == person.reference
        for consent in person.consents:
            assert consent["patient"]["identifier"] == {"system": CHI_SYSTEM, "value": chi_of(person)}
            for node in walk(consent["provision"]):
                reference = node.get("reference")
                if isinstance(reference, dict) and reference["reference"].startswith("Organization/"):
                    org = conf.organization_by_identifier(reference["identifier"]["system"], reference["identifier"]["value"])
                    assert org is not None and reference["reference"] == f"Organization/{org.id}"


def test_active_consents_cover_the_demo_date(people: list[DemoPerson]) -> None:
    for consent in (c for p in people for c in p.consents if c["status"] == "active"):
        period = consent["provision"]["period"]
        assert period["start"] <= TODAY.isoformat() <= period["end"]


def _permits(consent: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in walk(consent["provision"]) if n.get("type") == "permit" and "actor" in n]


def test_facility_opt_in_withholds_mental_health(people: list[DemoPerson]) -> None:
    person = next(p for p in people if p.stage == "residential")
    facility_permit = next(
        n for c in person.consents for n in _permits(c)
        if n["actor"][0]["reference"]["reference"] == f"Organization/{person.facility}"
    )
    assert facility_permit["actor"][0]["reference"]["identifier"]["value"] == person.facility
    assert {c["code"] for c in facility_permit["purpose"]} == {"TREAT", "CAREMGT"}
    (withheld,) = facility_permit["provision"]
    assert withheld["type"] == "deny"
    assert {s["code"] for s in withheld["securityLabel"]} == {"PSY", "MH"}
    assert withheld["code"][0]["coding"][0]["code"] == "mental-health"


def test_carer_grant_is_pathway_progress_for_carer_support(people: list[DemoPerson]) -> None:
    granted = 0
    for person in people:
        for consent in person.consents:
            for permit in _permits(consent):
                reference = permit["actor"][0]["reference"]["reference"]
                if reference.startswith("RelatedPerson/"):
                    assert reference == f"RelatedPerson/{person.related[0]['id']}"
                    assert [p["code"] for p in permit["purpose"]] == ["carer-support"]
                    assert [c["coding"][0]["code"] for c in permit["code"]] == ["pathway-progress"]
                    granted += 1
    assert granted >= 3
    early = next(p for p in people if p.early_exit)
    assert early.related and len(early.consents) == 2, "the early-exit alert has a consented carer to reach"


def test_consent_patterns_include_none_withdrawn_and_witnessed(people: list[DemoPerson]) -> None:
    assert any(not p.consents for p in people)
    withdrawn = [p for p in people if any(c["status"] == "inactive" for c in p.consents)]
    assert len(withdrawn) == 1 and withdrawn[0].stage == "closed"
    witnessed = [c for p in people for c in p.consents if "verification" in c]
    assert witnessed
    for consent in witnessed:
        (check,) = consent["verification"]
        assert check["extension"][0]["valueReference"]["reference"] == "PractitionerRole/adv-fiona-crichton"


def test_carers_use_v3_role_codes(people: list[DemoPerson]) -> None:
    codes = {r["relationship"][0]["coding"][0]["code"] for p in people for r in p.related}
    assert codes <= {"MTH", "FTH", "WIFE", "SIS", "DAU"} and len(codes) >= 3
    assert all(r["relationship"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v3-RoleCode" for p in people for r in p.related)


def test_each_person_has_a_substance_use_problem_and_a_prescription(people: list[DemoPerson]) -> None:
    for person in people:
        conditions = [r for r in person.clinical if r["resourceType"] == "Condition"]
        (medication,) = [r for r in person.clinical if r["resourceType"] == "MedicationStatement"]
        assert conditions[0]["code"]["coding"][0]["code"] in {"75544000", "7200002"}
        assert medication["reasonReference"] == [{"reference": f"Condition/{conditions[0]['id']}"}]
    products = {r["medicationCodeableConcept"]["text"] for p in people for r in p.clinical if r["resourceType"] == "MedicationStatement"}
    assert "Methadone 1mg/ml oral solution" in products


def ask(conf: Conf, person: DemoPerson, actor: dict[str, str], purpose: str, categories: list[str]) -> dict[str, Any]:
    """The consent engine's decision on the HSCP sharing this person's data, as the demo stores it."""
    request = {
        "patient": [{"system": CHI_SYSTEM, "value": chi_of(person)}],
        "actor": [actor],
        "purpose": purpose,
        "data": {"categories": categories},
        "holder": {"system": ODS_SYSTEM, "value": "S037"},
        "at": f"{TODAY.isoformat()}T10:00:00Z",
    }
    return decide(request, person.consents, [a.model_dump(mode="json") for a in conf.agreements])


def test_the_consent_engine_reads_the_patterns_as_meant(conf: Conf, people: list[DemoPerson]) -> None:
    resident = next(p for p in people if p.stage == "residential" and p.facility == "rehab-tayview-house")
    facility = {"system": PARTNER_SYSTEM, "value": "rehab-tayview-house"}
    to_facility = ask(conf, resident, facility, "TREAT", ["prescribing", "mental-health"])
    assert to_facility["decision"] == "permit"
    assert to_facility["obligations"][0]["redact"]["categories"] == ["mental-health"]

    early = next(p for p in people if p.early_exit)
    carer = {"system": "reference", "value": f"RelatedPerson/{early.related[0]['id']}"}
    request = {"patient": [{"system": CHI_SYSTEM, "value": chi_of(early)}], "actor": [carer], "purpose": "carer-support",
               "data": {"categories": ["pathway-progress"]}, "at": f"{TODAY.isoformat()}T10:00:00Z"}
    assert decide(request, early.consents)["decision"] == "permit"

    assert ask(conf, people[0], facility, "TREAT", ["prescribing"])["decision"] == "no-consent"
    withdrawn = next(p for p in people if p.stage == "closed")
    lomond = {"system": PARTNER_SYSTEM, "value": withdrawn.facility or ""}
    refused = ask(conf, withdrawn, lomond, "TREAT", ["prescribing"])
    assert refused["decision"] == "no-consent" and refused["flags"] == ["review-overdue: isa-dhscp-lomond-brae"]
