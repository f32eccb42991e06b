"""Prescribing: a drug record (the course) as a MedicationStatement, each issue as a MedicationRequest."""

from __future__ import annotations

from typing import Any

from adapters.common import Mapped, RecordProblem
from adapters.emis.coding import drug_concept
from adapters.emis.extract import SOURCE, Extract, confidential, effective, flag, guid, number, pruned, record_key
from mappings.identifiers import source_system

UCUM = "http://unitsofmeasure.org"


def drug_record(row: dict[str, str], extract: Extract) -> Mapped:
    """A prescribed course: active while IsActive, stopped once cancelled, else completed."""
    key = record_key(row, "DrugRecordGuid")
    if flag(row, "Deleted"):
        return extract.deleted(key, "MedicationStatement")
    subject = extract.patient_ref(row)
    medication = _medication(row, extract)
    started = effective(row, "EffectiveDate", "EffectiveDatePrecision")
    cancelled = effective(row, "CancellationDate")
    status = "stopped" if cancelled else "active" if flag(row, "IsActive") else "completed"
    problem = guid(row["ProblemObservationGuid"])
    statement = {
        "resourceType": "MedicationStatement",
        "identifier": [{"system": source_system(SOURCE, "drug-record-guid"), "value": key[1]}],
        "status": status,
        "category": {"text": row["PrescriptionType"]},
        "medicationCodeableConcept": medication,
        "subject": {"reference": subject},
        **({"effectivePeriod": {"start": started, "end": cancelled}} if cancelled else {"effectiveDateTime": started}),
        "informationSource": extract.user_ref(key[0], row["ClinicianUserInRoleGuid"]),
        "reasonReference": [{"reference": extract.reference("Condition", key[0], problem)}] if problem else [],
        "dosage": [{"text": row["Dosage"]}],
        "note": [{"text": _quantity_text(row)}],
    }
    return Mapped("", [extract.finish(confidential(pruned(statement), row, "IsConfidential"), *key)], {subject})


def issue_record(row: dict[str, str], extract: Extract) -> Mapped:
    """One issue of a course: a completed order with the quantity and days it supplies."""
    key = record_key(row, "IssueRecordGuid")
    if flag(row, "Deleted"):
        return extract.deleted(key, "MedicationRequest")
    subject = extract.patient_ref(row)
    course = guid(row["DrugRecordGuid"])
    days = number(row, "CourseDurationInDays")
    if days is not None and (not isinstance(days, int) or days < 0):
        raise RecordProblem(f"CourseDurationInDays {row['CourseDurationInDays']!r} is not a whole number of days")
    quantity = number(row, "Quantity")
    request = {
        "resourceType": "MedicationRequest",
        "identifier": [{"system": source_system(SOURCE, "issue-record-guid"), "value": key[1]}],
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": _medication(row, extract),
        "subject": {"reference": subject},
        "authoredOn": effective(row, "EffectiveDate"),
        "supportingInformation": [{"reference": extract.reference("MedicationStatement", key[0], course)}] if course else [],
        "dosageInstruction": [{"text": row["Dosage"]}],
        "dispenseRequest": {
            "quantity": {"value": quantity, "unit": row["QuantityUnit"]} if quantity is not None else None,
            "expectedSupplyDuration": {"value": days, "unit": "days", "system": UCUM, "code": "d"} if days is not None else None,
        },
    }
    return Mapped("", [extract.finish(confidential(pruned(request), row, "IsConfidential"), *key)], {subject})


def _medication(row: dict[str, str], extract: Extract) -> dict[str, Any]:
    if not row["CodeId"]:
        raise RecordProblem("CodeId is empty")
    return drug_concept(extract, row["CodeId"])


def _quantity_text(row: dict[str, str]) -> str:
    """The quantity per issue, kept as a note (a MedicationStatement has no quantity of its own)."""
    if not row["Quantity"]:
        return ""
    number(row, "Quantity")
    return f"Quantity per issue: {row['Quantity']} {row['QuantityUnit']}".strip()
