"""Labelling rules: data categories (meta.tag) and security labels (meta.security) from type, codes and source."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mappings.labels import CATEGORY_SYSTEM, CONFIDENTIALITY_SYSTEM, SENSITIVITY_SYSTEM, label_resource

SNOMED = "http://snomed.info/sct"
READ = "http://read.info/readv2"


def categories(resource: dict[str, Any]) -> set[str]:
    return {t["code"] for t in resource["meta"].get("tag", []) if t["system"] == CATEGORY_SYSTEM}


def security(resource: dict[str, Any]) -> set[str]:
    return {s["code"] for s in resource["meta"]["security"]}


def coded(resource_type: str, system: str, code: str, element: str = "code") -> dict[str, Any]:
    return {"resourceType": resource_type, element: {"coding": [{"system": system, "code": code}]}}


def test_a_patient_is_demographics_and_contact_details_only_with_an_address_or_telecom() -> None:
    assert categories(label_resource({"resourceType": "Patient", "name": [{"family": "Reid"}]})) == {"demographics"}
    assert categories(label_resource({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}]})) == {"demographics", "contact-details"}


@pytest.mark.parametrize(
    ("system", "code", "category", "labels"),
    [
        (SNOMED, "75544000", "substance-use", {"OPIOIDUD", "SUD", "N"}),  # opioid dependence
        (SNOMED, "66590003", "substance-use", {"ETHUD", "SUD", "N"}),  # alcohol dependence
        (SNOMED, "191816009", "substance-use", {"SUD", "N"}),  # drug dependence
        (SNOMED, "35489007", "mental-health", {"PSY", "N"}),  # depressive disorder
        (READ, "E240.", "substance-use", {"OPIOIDUD", "SUD", "N"}),  # Read v2 opioid dependence
        (READ, "E2B..", "mental-health", {"PSY", "N"}),
        (SNOMED, "271649006", "physical-health", {"N"}),  # systolic blood pressure: no rule, the type's default
    ],
)
def test_a_condition_is_labelled_by_its_code(system: str, code: str, category: str, labels: set[str]) -> None:
    resource = label_resource(coded("Condition", system, code))
    assert categories(resource) == {category}
    assert security(resource) == labels


def test_an_opioid_substitute_is_prescribing_and_substance_use_by_its_name() -> None:
    statement = label_resource({"resourceType": "MedicationStatement", "medicationCodeableConcept": {"text": "Methadone 1mg/ml oral solution"}})
    assert categories(statement) == {"prescribing", "substance-use"}
    assert {"OPIOIDUD", "SUD"} <= security(statement)


def test_workflow_resources_are_pathway_progress_and_star_readings_are_reviews() -> None:
    assert "pathway-progress" in categories(label_resource({"resourceType": "Task"}))
    assert "pathway-progress" in categories(label_resource({"resourceType": "EpisodeOfCare"}))
    star = label_resource({"resourceType": "QuestionnaireResponse", "questionnaire": "https://pathway.scot/Questionnaire/outcome-star"})
    assert categories(star) == {"reviews"}
    assert categories(label_resource({"resourceType": "RelatedPerson"})) == {"carer-details"}


def test_risks_are_labelled_by_their_type() -> None:
    risk = "https://pathway.scot/CodeSystem/risk-type"
    abuse = label_resource(coded("RiskAssessment", risk, "domestic-abuse"), "socialwork")
    assert categories(abuse) == {"domestic-abuse", "social-care"} and {"SDV", "R"} <= security(abuse)
    child = label_resource(coded("RiskAssessment", risk, "child-protection"), "socialwork")
    assert "child-protection" in categories(child) and "R" in security(child)


def test_everything_from_social_work_is_also_social_care_whether_told_or_read_from_meta_source() -> None:
    assert "social-care" in categories(label_resource({"resourceType": "Patient"}, "socialwork"))
    from_meta = {"resourceType": "Observation", "meta": {"source": "https://pathway.scot/source/socialwork/SW-1/assessment/A1"}}
    assert "social-care" in categories(label_resource(from_meta))
    assert "social-care" not in categories(label_resource({"resourceType": "Observation"}, "emis"))


def test_a_resource_already_restricted_keeps_r_and_gets_no_n() -> None:
    resource = coded("Observation", SNOMED, "271649006")
    resource["meta"] = {"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]}
    assert security(label_resource(resource)) == {"R"}


def test_labelling_twice_changes_nothing_and_keeps_what_was_there() -> None:
    resource = coded("Condition", SNOMED, "75544000")
    resource["meta"] = {"tag": [{"system": "urn:other", "code": "x"}], "security": [{"system": SENSITIVITY_SYSTEM, "code": "HIV"}]}
    once = label_resource(resource)
    snapshot = copy.deepcopy(once)
    assert label_resource(once) == snapshot
    assert {"system": "urn:other", "code": "x"} in once["meta"]["tag"] and "HIV" in security(once)


def test_any_resource_type_a_partner_posts_can_be_labelled() -> None:
    labelled = label_resource({"resourceType": "Basic", "code": {"text": "anything"}})
    assert security(labelled) == {"N"} and "tag" not in labelled["meta"]
