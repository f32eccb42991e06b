"""Redaction: a decision applied to resources and Bundles, with dangling references pruned."""

from __future__ import annotations

import copy
from typing import Any

from consent import redact

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CAT = "https://pathway.scot/CodeSystem/data-category"
SCT = "http://snomed.info/sct"
PATIENT = {"resourceType": "Patient", "id": "p-ross", "meta": {"tag": [{"system": CAT, "code": "demographics"}]}}


def labelled(resource_type: str, rid: str, categories: list[str], security: list[str] = (), **body: Any) -> dict[str, Any]:
    meta = {"tag": [{"system": CAT, "code": c} for c in categories], "security": [{"system": ACT, "code": s} for s in security]}
    return {"resourceType": resource_type, "id": rid, "meta": meta, **body}


DEPRESSION = labelled("Condition", "c-depression", ["mental-health"], ["PSY"], subject={"reference": "Patient/p-ross"},
                      code={"coding": [{"system": SCT, "code": "35489007"}]})
OPIOIDS = labelled("Condition", "c-opioids", ["substance-use"], ["OPIOIDUD"], subject={"reference": "Patient/p-ross"})
METHADONE = labelled(
    "MedicationStatement", "ms-methadone", ["prescribing", "substance-use"], ["OPIOIDUD"],
    subject={"reference": "Patient/p-ross"},
    medicationCodeableConcept={"coding": [{"system": SCT, "code": "387286002"}]},
    reasonReference=[{"reference": "Condition/c-opioids"}, {"reference": "Condition/c-depression"}],
)
REFERRAL = labelled(
    "ServiceRequest", "sr-rehab", ["pathway-progress"], subject={"reference": "Patient/p-ross"},
    supportingInfo=[{"reference": "Condition/c-depression"}, {"reference": "Condition/c-opioids"}],
    reasonReference=[{"reference": "Condition/c-depression"}],
)
REVIEW = labelled("Encounter", "e-review", ["reviews"], subject={"reference": "Patient/p-ross"},
                  reasonReference=[{"reference": "Condition/c-depression"}])
RECORD = [PATIENT, DEPRESSION, OPIOIDS, METHADONE, REFERRAL, REVIEW]


def permit(**redact_: list[Any]) -> dict[str, Any]:
    kinds = {"security": [], "categories": [], "codes": [], "classes": []} | redact_
    return {"decision": "permit", "reasons": [], "agreements": [], "consents": [], "flags": [],
            "obligations": [{"redact": kinds}] if redact_ else []}


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in resources]


def test_permit_without_obligations_keeps_everything_unchanged() -> None:
    result = redact(RECORD, permit())
    assert result.resources == RECORD and result.withheld == 0 and result.outcome is None


def test_deny_and_no_consent_keep_nothing() -> None:
    for decision in ("deny", "no-consent"):
        result = redact(RECORD, {"decision": decision, "obligations": []})
        assert result.resources == [] and result.withheld == len(RECORD)
        assert result.outcome["issue"][0]["code"] == "suppressed"


def test_psy_redaction_removes_mental_health_and_its_references() -> None:
    before = copy.deepcopy(RECORD)
    result = redact(RECORD, permit(security=["PSY"]))
    assert ids(result.resources) == ["p-ross", "c-opioids", "ms-methadone", "sr-rehab", "e-review"]
    methadone = result.resources[2]
    assert methadone["reasonReference"] == [{"reference": "Condition/c-opioids"}]
    referral = result.resources[3]
    assert referral["supportingInfo"] == [{"reference": "Condition/c-opioids"}]
    assert "reasonReference" not in referral  # the list emptied, so the element goes
    # The review's only reason was the depression: the list empties and the optional element goes.
    assert "reasonReference" not in result.resources[4] and result.resources[4]["subject"] == REVIEW["subject"]
    assert RECORD == before  # inputs untouched


def test_outcome_says_only_that_something_was_withheld() -> None:
    result = redact(RECORD, permit(security=["PSY"]))
    assert result.withheld == 1
    assert result.outcome == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "suppressed", "diagnostics": "some information withheld"}],
    }
    assert "c-depression" not in str(result.outcome)


def test_sud_obligation_reaches_opioid_labels() -> None:
    result = redact(RECORD, permit(security=["SUD"]))
    assert "c-opioids" not in ids(result.resources) and "ms-methadone" not in ids(result.resources)
    eth = redact(RECORD, permit(security=["ETH"]))
    assert ids(eth.resources) == ids(result.resources)


def test_category_class_and_code_obligations() -> None:
    assert "e-review" not in ids(redact(RECORD, permit(categories=["reviews"])).resources)
    assert "ms-methadone" not in ids(redact(RECORD, permit(classes=["MedicationStatement"])).resources)
    by_code = redact(RECORD, permit(codes=[{"system": SCT, "code": "387286002"}]))
    assert ids(by_code.resources) == ["p-ross", "c-depression", "c-opioids", "sr-rehab", "e-review"]


def test_required_reference_to_a_removed_resource_removes_it_too() -> None:
    # Withholding demographics removes the Patient; every resource whose required subject
    # pointed at it goes as well. The Encounter's subject is optional, so it stays without it.
    result = redact(RECORD, permit(categories=["demographics"]))
    assert ids(result.resources) == ["e-review"]
    assert "subject" not in result.resources[0]
    assert result.withheld == 5


def test_removal_cascades_through_required_references() -> None:
    medication = {"resourceType": "Medication", "id": "med-1", "meta": {"tag": [{"system": CAT, "code": "substance-use"}]}}
    statement = labelled("MedicationStatement", "ms-2", ["prescribing"], subject={"reference": "Patient/p-ross"},
                         medicationReference={"reference": "Medication/med-1"})
    provenance = {"resourceType": "Provenance", "id": "prov-1", "target": [{"reference": "MedicationStatement/ms-2"}]}
    result = redact([PATIENT, medication, statement, provenance], permit(categories=["substance-use"]))
    assert ids(result.resources) == ["p-ross"]


def test_list_item_holding_a_dangling_reference_goes() -> None:
    task = {"resourceType": "Task", "id": "t-1", "input": [
        {"type": {"text": "facility"}, "valueReference": {"reference": "Organization/rehab"}},
        {"type": {"text": "evidence"}, "valueReference": {"reference": "https://gw.example/fhir/Condition/c-depression/_history/2"}},
    ]}
    result = redact([task, DEPRESSION], permit(security=["PSY"]))
    assert result.resources[0]["input"] == [task["input"][0]]


def test_bundle_keeps_its_shape() -> None:
    bundle = {
        "resourceType": "Bundle", "type": "searchset", "total": 3,
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": PATIENT, "search": {"mode": "match"}},
            {"fullUrl": "urn:uuid:2", "resource": DEPRESSION, "search": {"mode": "match"}},
            {"fullUrl": "urn:uuid:3", "resource": REFERRAL, "search": {"mode": "match"}},
        ],
    }
    result = redact(bundle, permit(categories=["mental-health"]))
    assert result.resources["resourceType"] == "Bundle" and result.resources["type"] == "searchset"
    assert [e["fullUrl"] for e in result.resources["entry"]] == ["urn:uuid:1", "urn:uuid:3"]
    assert result.resources["total"] == 2 and result.withheld == 1
    assert result.resources["entry"][1]["resource"]["supportingInfo"] == [{"reference": "Condition/c-opioids"}]
    assert bundle["entry"][2]["resource"] is REFERRAL and len(bundle["entry"]) == 3


def test_bundle_references_by_full_url_are_pruned() -> None:
    note = {"resourceType": "Communication", "id": "n-1", "about": [{"reference": "urn:uuid:2"}, {"reference": "urn:uuid:1"}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": PATIENT},
        {"fullUrl": "urn:uuid:2", "resource": DEPRESSION},
        {"fullUrl": "urn:uuid:3", "resource": note},
    ]}
    result = redact(bundle, permit(security=["PSY"]))
    assert result.resources["entry"][1]["resource"]["about"] == [{"reference": "urn:uuid:1"}]


def test_denied_bundle_is_empty() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": PATIENT}]}
    result = redact(bundle, {"decision": "deny", "obligations": []})
    assert "entry" not in result.resources and result.withheld == 1
