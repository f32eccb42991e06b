"""The care record: consultations (Encounter) and observations (Observation, or Condition for a problem).

An observation is a problem when CareRecord_Problem.csv has a row for it; the
problem rows are loaded first (keyed by organisation and ObservationGuid) so the
observations themselves can be streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from adapters.common import Mapped, Quarantined, RecordProblem
from adapters.emis.coding import clinical_concept
from adapters.emis.extract import SOURCE, Extract, Key, confidential, effective, flag, guid, number, pruned, record_key
from mappings.identifiers import EXTENSION_BASE, source_system

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
PROBLEM_STATUSES = {"active": "active", "past": "resolved"}


def load_problems(extract: Extract) -> Iterator[Quarantined]:
    """Keep the problem rows by (organisation, observation); yields the rows that cannot be read."""
    for location, row, problem in extract.rows("problems"):
        if row is None:
            yield Quarantined(location, problem or "unreadable row")
            continue
        try:
            extract.problems[record_key(row, "ObservationGuid")] = {**row, "location": location}
        except RecordProblem as missing:
            yield Quarantined(location, str(missing), row)


def consultation(row: dict[str, str], extract: Extract) -> Mapped:
    """A consultation as a finished ambulatory Encounter (or its deletion)."""
    key = record_key(row, "ConsultationGuid")
    if flag(row, "Deleted"):
        return extract.deleted(key, "Encounter")
    subject = extract.patient_ref(row)
    start = effective(row, "EffectiveDate", "EffectiveDatePrecision")
    clinician = extract.user_ref(key[0], row["ClinicianUserInRoleGuid"])
    encounter = {
        "resourceType": "Encounter",
        "identifier": [{"system": source_system(SOURCE, "consultation-guid"), "value": key[1]}],
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
        "type": [{"text": row["ConsultationSourceTerm"]}],
        "subject": {"reference": subject},
        "participant": [{"individual": clinician}] if clinician else [],
        "period": {"start": start},
        "serviceProvider": extract.organisation_ref(key[0]),
    }
    return Mapped("", [extract.finish(confidential(pruned(encounter), row, "IsConfidential"), *key)], {subject})


def observation(row: dict[str, str], extract: Extract) -> Mapped:
    """An observation as an Observation, or as a Condition when it is a problem (or the deletion of either)."""
    key = record_key(row, "ObservationGuid")
    if flag(row, "Deleted"):
        # A delta does not say whether the earlier version was a problem: delete whichever exists.
        return extract.deleted(key, "Observation", "Condition")
    subject = extract.patient_ref(row)
    if not row["CodeId"]:
        raise RecordProblem("CodeId is empty")
    common = {
        "code": clinical_concept(extract, row["CodeId"]),
        "subject": {"reference": subject},
        "encounter": _encounter(row, extract),
    }
    when = effective(row, "EffectiveDate", "EffectiveDatePrecision")
    clinician = extract.user_ref(key[0], row["ClinicianUserInRoleGuid"])
    problem = extract.problems.get(key)
    if problem is not None:
        resource = _condition(key, problem, common, when, clinician)
    else:
        resource = {
            "resourceType": "Observation",
            "identifier": [{"system": source_system(SOURCE, "observation-guid"), "value": key[1]}],
            "status": "final",
            **common,
            "effectiveDateTime": when,
            "performer": [clinician] if clinician else [],
            **_value(row),
            "note": [{"text": row["AssociatedText"]}],
            "derivedFrom": [{"reference": extract.reference("Observation", key[0], guid(row["ParentObservationGuid"]))}] if row["ParentObservationGuid"] else [],
        }
    return Mapped("", [extract.finish(confidential(pruned(resource), row, "IsConfidential"), *key)], {subject})


def _condition(key: Key, problem: dict[str, str], common: dict[str, Any], onset: str | None, clinician: dict[str, str] | None) -> dict[str, Any]:
    status = PROBLEM_STATUSES.get(problem["ProblemStatusDescription"].lower())
    if status is None:
        raise RecordProblem(f"ProblemStatusDescription {problem['ProblemStatusDescription']!r} (at {problem['location']}) is not Active or Past")
    extensions = [
        {"url": EXTENSION_BASE + "problem-significance", "valueString": problem["SignificanceDescription"]},
        {"url": EXTENSION_BASE + "problem-last-review", "valueDate": effective(problem, "LastReviewDate")},
    ]
    return {
        "resourceType": "Condition",
        "identifier": [{"system": source_system(SOURCE, "observation-guid"), "value": key[1]}],
        "extension": [e for e in extensions if len(pruned(e)) == 2],
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
        **common,
        "onsetDateTime": onset,
        "abatementDateTime": effective(problem, "EndDate", "EndDatePrecision"),
        "asserter": clinician,
        "note": [{"text": problem["Comment"]}],
    }


def _value(row: dict[str, str]) -> dict[str, Any]:
    """valueQuantity (with its reference range) for a numeric value, valueString for text."""
    if not row["Value"]:
        return {}
    try:
        value = number(row, "Value")
    except RecordProblem:
        return {"valueString": row["Value"]}
    unit = row["NumericUnit"]
    low, high = number(row, "NumericRangeLow"), number(row, "NumericRangeHigh")
    return {
        "valueQuantity": {"value": value, "unit": unit},
        "referenceRange": [{"low": {"value": low, "unit": unit} if low is not None else None, "high": {"value": high, "unit": unit} if high is not None else None}],
    }


def _encounter(row: dict[str, str], extract: Extract) -> dict[str, str] | None:
    consultation_guid = guid(row["ConsultationGuid"])
    return {"reference": extract.reference("Encounter", guid(row["OrganisationGuid"]), consultation_guid)} if consultation_guid else None
