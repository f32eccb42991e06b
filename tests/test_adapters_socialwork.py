"""Social-work case records: risks labelled by type, carers' wishes, the referral, social-care on everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import adapters
from adapters.common import IdScheme

FIXTURE = Path(__file__).parent / "fixtures" / "ingest" / "socialwork.json"
HSCP = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"}
HSCP_IDS = IdScheme.random("https://fhir.nhs.uk/Id/ods-organization-code|S037")


def resources(kind: str) -> list[dict[str, Any]]:
    return [r for r in adapters.ingest("socialwork", FIXTURE, ids=HSCP_IDS).resources if r["resourceType"] == kind]


def labels(resource: dict[str, Any]) -> tuple[set[str], set[str]]:
    return {t["code"] for t in resource["meta"].get("tag", [])}, {s["code"] for s in resource["meta"]["security"]}


def test_everything_from_social_work_carries_social_care() -> None:
    for resource in adapters.ingest("socialwork", FIXTURE, ids=HSCP_IDS).resources:
        assert "social-care" in labels(resource)[0], resource["resourceType"]


def test_a_domestic_abuse_risk_is_sdv_and_restricted() -> None:
    abuse = next(r for r in resources("RiskAssessment") if r["code"]["coding"][0]["code"] == "domestic-abuse")
    categories, security = labels(abuse)
    assert "domestic-abuse" in categories and {"SDV", "R"} <= security


def test_a_carer_keeps_their_wish_to_be_involved_in_reviews() -> None:
    carer = resources("RelatedPerson")[0]
    assert carer["relationship"][0]["coding"][0]["code"] == "SIS"
    assert {"url": "https://pathway.scot/StructureDefinition/involve-in-reviews", "valueBoolean": True} in carer["extension"]


def test_the_referral_is_a_rehab_referral_with_its_own_business_identifier() -> None:
    referral = resources("ServiceRequest")[0]
    assert referral["category"][0]["coding"][0] == {"system": "https://pathway.scot/CodeSystem/request-category", "code": "rehab-referral"}
    assert referral["identifier"][0]["system"] == "https://pathway.scot/Id/referral"
    assert referral["identifier"][0]["value"] != referral["id"]


def _case(**changes: Any) -> bytes:
    case = json.loads(FIXTURE.read_text())[0]
    return json.dumps([{**case, **changes}]).encode()


def test_a_birth_date_in_the_future_is_quarantined() -> None:
    report = adapters.ingest("socialwork", _case(birth_date="2980-01-01"), ids=HSCP_IDS).report()
    assert report["accepted"] == 0 and report["quarantined"][0]["reason"] == "birth_date 2980-01-01 is in the future"


def test_a_chi_must_be_ascii_digits_and_may_be_written_in_groups() -> None:
    arabic = adapters.ingest("socialwork", _case(chi="٠١٠١٨٠٠٠٠٢"), ids=HSCP_IDS).report()
    assert arabic["accepted"] == 0 and "is not 10 digits" in arabic["quarantined"][0]["reason"]
    grouped = adapters.ingest("socialwork", _case(chi="010 180 0002"), ids=HSCP_IDS)
    patient = next(r for r in grouped.resources if r["resourceType"] == "Patient")
    assert patient["id"] == HSCP_IDS.person("0101800002") and patient["identifier"][0]["value"] == "0101800002"
