"""Labelling rules: every resource gets the categories and security labels its content calls for."""

from __future__ import annotations

import copy

from mappings.labels import CATEGORY_SYSTEM, label_resource

SNOMED = "http://snomed.info/sct"


def labels(resource: dict, source: str | None = None) -> tuple[set[str], set[str]]:  # type: ignore[type-arg]
    meta = label_resource(resource, source)["meta"]
    return {t["code"] for t in meta.get("tag", []) if t["system"] == CATEGORY_SYSTEM}, {s["code"] for s in meta["security"]}


def test_methadone_is_prescribing_and_opioid_substance_use() -> None:
    statement = {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": {"text": "Methadone 1mg/ml oral solution"}}
    assert labels(statement) == ({"prescribing", "substance-use"}, {"OPIOIDUD", "SUD", "N"})


def test_depression_is_mental_health_not_physical_health() -> None:
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "code": {"coding": [{"system": SNOMED, "code": "35489007"}]}}
    assert labels(condition) == ({"mental-health"}, {"PSY", "N"})


def test_alcohol_dependence_is_labelled_ethud() -> None:
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "code": {"coding": [{"system": SNOMED, "code": "66590003"}]}}
    assert labels(condition) == ({"substance-use"}, {"ETHUD", "SUD", "N"})


def test_a_blood_pressure_reading_is_physical_health() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}}
    assert labels(observation) == ({"physical-health"}, {"N"})


def test_patient_with_an_address_has_contact_details() -> None:
    assert labels({"resourceType": "Patient", "address": [{"city": "Dundee"}]})[0] == {"demographics", "contact-details"}
    assert labels({"resourceType": "Patient"})[0] == {"demographics"}


def test_everything_from_social_work_is_social_care() -> None:
    person = {"resourceType": "Patient", "meta": {"source": "https://pathway.scot/source/socialwork/SW-000123"}}
    assert "social-care" in labels(person)[0]
    assert "social-care" in labels({"resourceType": "RelatedPerson"}, source="socialwork")[0]


def test_child_protection_risk_is_restricted() -> None:
    flag = {"resourceType": "Flag", "status": "active", "code": {"coding": [{"system": "https://pathway.scot/CodeSystem/risk-type", "code": "child-protection"}]}}
    assert labels(flag) == ({"child-protection"}, {"R"})


def test_outcome_star_reading_is_reviews() -> None:
    response = {"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": "https://pathway.scot/Questionnaire/outcome-star"}
    assert labels(response)[0] == {"reviews"}


def test_labelling_keeps_existing_labels_and_is_idempotent() -> None:
    confidential = {"resourceType": "Condition", "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}, "code": {"text": "x"}}
    once = label_resource(copy.deepcopy(confidential))
    assert {s["code"] for s in once["meta"]["security"]} == {"R"}
    assert label_resource(copy.deepcopy(once)) == once
