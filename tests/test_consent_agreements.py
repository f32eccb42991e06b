"""Information-sharing agreements: parsing, current versions and the agreement layer (DESIGN §6.1)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from consent import Agreement, current_versions, decide, parse_agreement
from consent.agreements import evaluate_agreements
from consent.model import parse_request

HSCP = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S037"}
FACILITY = {"system": "https://pathway.scot/Id/partner", "value": "rehab-tayview-house"}
ADVOCACY = {"system": "https://pathway.scot/Id/partner", "value": "advocacy-dundee"}
CHI = {"system": "https://fhir.nhs.uk/Id/chi-number", "value": "1503901238"}
PERMIT_ALL = {
    "resourceType": "Consent", "id": "blanket", "status": "active", "patient": {"identifier": CHI},
    "provision": {"type": "permit"},
}


def tayview(**changes: Any) -> dict[str, Any]:
    agreement = {
        "id": "isa-dhscp-tayview",
        "version": 1,
        "title": "Dundee HSCP and Tayview House - residential rehabilitation referrals",
        "status": "active",
        "parties": [HSCP, FACILITY],
        "purposes": ["TREAT", "CAREMGT"],
        "categories": ["demographics", "substance-use", "prescribing", "pathway-progress"],
        "lawful_basis": ["UK GDPR Art 6(1)(e)", "UK GDPR Art 9(2)(h)"],
        "start": "2025-04-01",
        "end": "2027-03-31",
        "review_date": "2026-12-31",
        "signatories": [{"party": FACILITY, "name": "Registered Manager, Tayview House", "signed": "2025-03-20"}],
    }
    return agreement | changes


def ask(agreements: list[dict[str, Any]], at: str = "2026-06-01T09:00:00Z", **changes: Any) -> dict[str, Any]:
    request = {"patient": [CHI], "actor": [FACILITY], "holder": HSCP, "purpose": "TREAT", "at": at,
               "data": {"categories": ["substance-use"]}} | changes
    return decide(request, [PERMIT_ALL], agreements)


def demo_agreements() -> list[dict[str, Any]]:
    return yaml.safe_load((Path(__file__).parents[1] / "conf" / "agreements.yaml").read_text())["agreements"]


def test_demo_agreements_parse() -> None:
    agreements = [parse_agreement(d) for d in demo_agreements()]
    assert all(isinstance(a, Agreement) for a in agreements)
    assert "isa-dhscp-tayview@3" in [a.ref for a in current_versions(agreements)]


@pytest.mark.parametrize("facility", ["rehab-tayview-house", "rehab-lomond-brae"])
def test_demo_facilities_receive_the_social_work_case_but_not_domestic_abuse(facility: str) -> None:
    actor = [{"system": FACILITY["system"], "value": facility}]
    person = ask(demo_agreements(), at="2026-12-01T09:00:00Z", actor=actor, purpose="CAREMGT", data={"categories": ["demographics", "social-care"]})
    assert person["decision"] == "permit" and not person.get("obligations"), person
    abuse = ask(demo_agreements(), at="2026-12-01T09:00:00Z", actor=actor, purpose="CAREMGT", data={"categories": ["domestic-abuse", "social-care"]})
    assert abuse["obligations"] == [{"redact": {"security": [], "categories": ["domestic-abuse"], "codes": [], "classes": []}}]


def test_parse_names_the_faulty_field() -> None:
    with pytest.raises(ValidationError) as error:
        parse_agreement(tayview(version="two"))
    assert "version" in str(error.value)
    with pytest.raises(ValidationError, match="unknown data categories"):
        parse_agreement(tayview(categories=["subtance-use"]))
    with pytest.raises(ValidationError, match="before start"):
        parse_agreement(tayview(end="2024-01-01"))
    with pytest.raises(ValidationError, match="not a party"):
        parse_agreement(tayview(signatories=[{"party": ADVOCACY, "name": "x", "signed": "2025-01-01"}]))
    with pytest.raises(ValueError, match="mapping"):
        parse_agreement(["not", "an", "agreement"])


def test_chi_oid_party_reads_as_chi_system() -> None:
    agreement = parse_agreement(tayview(parties=[HSCP, FACILITY, {"system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.16.53", "value": "x"}]))
    assert agreement.parties[2].system == "https://fhir.nhs.uk/Id/chi-number"


def test_only_highest_version_counts() -> None:
    versions = [parse_agreement(tayview(version=v)) for v in (2, 3, 1)]
    assert [a.version for a in current_versions(versions)] == [3]


def test_applying_agreement_is_named_with_its_version() -> None:
    decision = ask([tayview(), tayview(version=2)])
    assert decision["decision"] == "permit"
    assert decision["agreements"] == ["isa-dhscp-tayview@2"]


@pytest.mark.parametrize(
    ("changes", "at", "why"),
    [
        ({"status": "suspended"}, "2026-06-01", "status is suspended"),
        ({"status": "draft"}, "2026-06-01", "status is draft"),
        ({}, "2027-04-01T00:00:00Z", "expired on 2027-03-31"),
        ({"status": "active", "end": "2026-05-31"}, "2026-06-01", "expired on 2026-05-31"),
        ({}, "2025-03-31T23:00:00Z", "starts on 2025-04-01"),
        ({"purposes": ["CAREMGT"]}, "2026-06-01", "purpose TREAT is not among CAREMGT"),
    ],
)
def test_agreement_not_applying_denies_with_the_reason(changes: dict[str, Any], at: str, why: str) -> None:
    decision = ask([tayview(**changes)], at=at)
    assert decision["decision"] == "deny"
    assert any(why in reason for reason in decision["reasons"]), decision["reasons"]


def test_end_date_is_inclusive() -> None:
    assert ask([tayview()], at="2027-03-31T23:59:59Z")["decision"] == "permit"


def test_past_end_is_expired_even_when_status_says_active() -> None:
    assert ask([tayview(status="active", end="2026-01-01")])["decision"] == "deny"


def test_holder_must_be_a_party_and_actor_another_party() -> None:
    stranger = {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S999"}
    assert ask([tayview()], holder=stranger)["decision"] == "deny"
    assert ask([tayview()], actor=[ADVOCACY])["decision"] == "deny"
    # The holder asking about itself is not "another party".
    assert ask([tayview()], actor=[HSCP])["decision"] == "deny"
    # Any one of the actor's identifiers may be the party.
    assert ask([tayview()], actor=[{"system": "reference", "value": "Organization/x"}, FACILITY])["decision"] == "permit"


def test_review_overdue_still_applies_but_is_flagged() -> None:
    decision = ask([tayview(review_date="2026-05-31")])
    assert decision["decision"] == "permit"
    assert decision["flags"] == ["review-overdue: isa-dhscp-tayview"]
    assert ask([tayview(review_date="2026-06-01")])["flags"] == []


def test_uncovered_categories_are_redacted_and_none_covered_denies() -> None:
    partly = ask([tayview()], data={"categories": ["substance-use", "justice", "mental-health"]})
    assert partly["decision"] == "permit"
    assert partly["obligations"][0]["redact"]["categories"] == ["justice", "mental-health"]
    none = ask([tayview()], data={"categories": ["justice"]})
    assert none["decision"] == "deny"
    assert "covers none" in none["reasons"][-1]


def test_two_agreements_cover_the_union_of_their_categories() -> None:
    justice = tayview(id="isa-dhscp-tayview-justice", categories=["justice"], purposes=["TREAT"])
    decision = ask([tayview(), justice], data={"categories": ["substance-use", "justice"]})
    assert decision["decision"] == "permit"
    assert decision["obligations"] == []
    assert decision["agreements"] == ["isa-dhscp-tayview@1", "isa-dhscp-tayview-justice@1"]


def test_any_data_withholds_every_uncovered_category() -> None:
    decision = ask([tayview()], data=None)
    withheld = decision["obligations"][0]["redact"]["categories"]
    assert "mental-health" in withheld and "substance-use" not in withheld


def test_unreadable_agreement_is_ignored_with_a_reason() -> None:
    decision = ask([tayview(categories=["nonsense"]), tayview(id="isa-dhscp-tayview-2")])
    assert decision["decision"] == "permit"
    assert any("isa-dhscp-tayview cannot be read" in r for r in decision["reasons"])


def test_agreement_layer_refuses_even_when_consent_permits() -> None:
    assert ask([])["decision"] == "deny"


def test_agreement_objects_are_accepted_as_well_as_dicts() -> None:
    assert ask([parse_agreement(tayview())])["decision"] == "permit"


def test_evaluate_agreements_directly() -> None:
    request = parse_request({"purpose": "TREAT", "actor": [FACILITY], "holder": HSCP, "at": "2026-06-01"})
    outcome = evaluate_agreements([parse_agreement(tayview())], request, date(2026, 6, 1))
    assert outcome.permit and outcome.agreements == ["isa-dhscp-tayview@1"]
