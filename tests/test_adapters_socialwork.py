"""Social-work case records: risks labelled by type, carers' wishes, the referral, social-care on everything."""

from __future__ import annotations

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
        if resource["resourceType"] != "Practitioner":  # a directory entry, not person data
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
