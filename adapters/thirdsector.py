"""Third-sector support records (DESIGN §5.3): one CSV row per contact or Outcome Star reading.

A contact becomes an Encounter; a star reading also becomes a QuestionnaireResponse
and one Observation per Star area (scores only, never the Star's own wording); a
naloxone supply becomes a MedicationDispense. A row without a CHI is matched on
given name, family name and birth date, or quarantined as unmatched (with any
near-misses put up for review).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from adapters.common import IdScheme, Mapped, Quarantined, RecordProblem, birth_date, checked, csv_rows, finish, parse_date
from adapters.identity import PatientIndex, checked_chi, existing_by_chi, match_person
from mappings.identifiers import CHI_SYSTEM, EXTENSION_BASE, PARTNER_SYSTEM, person_number, source_system

SOURCE = "thirdsector"
CONTACT_SYSTEM = "https://pathway.scot/CodeSystem/third-sector-contact"
# R4's Encounter has no note element: the worker's note on the contact travels in this
# extension as an Annotation (text, author, date).
CONTACT_NOTE = EXTENSION_BASE + "contact-note"
STAR_SYSTEM = "https://pathway.scot/CodeSystem/outcome-star-area"
STAR_QUESTIONNAIRE = "https://pathway.scot/Questionnaire/outcome-star"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
STAR_AREAS = (
    "drug-use", "alcohol-use", "physical-health", "meaningful-use-of-time", "community",
    "emotional-health", "accommodation", "money", "offending", "family-relationships",
)
# contact type -> Encounter.class (HL7 v3 ActCode)
CONTACT_CLASSES = {
    "one-to-one": ("AMB", "ambulatory"),
    "group": ("AMB", "ambulatory"),
    "phone": ("VR", "virtual"),
    "outreach": ("FLD", "field"),
    "star-reading": ("AMB", "ambulatory"),
    "naloxone-supply": ("FLD", "field"),
}
REQUIRED = ("org_id", "client_ref", "contact_date", "contact_type")


def _person(row: dict[str, str], ids: IdScheme, index: PatientIndex | None) -> tuple[str, list[dict[str, Any]]]:
    """The Patient id a row is about, and a Patient to store when the CHI is new to Pathway."""
    given, family = row.get("given_name", "").strip(), row.get("family_name", "").strip()
    born = birth_date(row["birth_date"].strip(), "birth_date") if row.get("birth_date", "").strip() else None
    chi = person_number(row.get("chi", ""))
    if chi:
        checked_chi(chi, born, None)
        existing = existing_by_chi(index, chi)
        if existing:
            return existing, []
        patient: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": CHI_SYSTEM, "value": chi}]}
        if family or given:
            patient["name"] = [{"family": family, "given": [given] if given else []}]
        if born:
            patient["birthDate"] = born
        patient = finish(patient, ids, SOURCE, row["org_id"], "client", row["client_ref"])
        patient["id"] = ids.person(chi)
        return patient["id"], [patient]
    if not (given and family and born):
        raise RecordProblem("unmatched: no CHI, and given name, family name and birth date are not all given", None)
    match = match_person(index, given=given, family=family, birth_date=born)
    if match.patient_id is None:
        reason = "unmatched: no CHI and no single person with this name and birth date"
        raise RecordProblem(reason + ("; possible matches sent for review" if match.review else ""), match.review)
    return match.patient_id, []


def _scores(row: dict[str, str]) -> dict[str, int]:
    scores = {}
    for area in STAR_AREAS:
        raw = row.get(f"star_{area.replace('-', '_')}", "").strip()
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 10:
            raise RecordProblem(f"Outcome Star {area} score {raw!r} is not a whole number from 1 to 10")
        scores[area] = int(raw)
    return scores


def map_row(row: dict[str, str], ids: IdScheme, index: PatientIndex | None) -> Mapped:
    missing = [c for c in REQUIRED if not row.get(c, "").strip()]
    if missing:
        raise RecordProblem(f"missing {', '.join(missing)}")
    kind = row["contact_type"].strip()
    if kind not in CONTACT_CLASSES:
        raise RecordProblem(f"contact_type {kind!r} is not one of {', '.join(CONTACT_CLASSES)}")
    when = parse_date(row["contact_date"].strip(), "contact_date")
    org, client = row["org_id"].strip(), row["client_ref"].strip()
    patient_id, resources = _person(row, ids, index)
    subject = {"reference": f"Patient/{patient_id}"}
    key = (org, client, when, kind)
    klass, display = CONTACT_CLASSES[kind]
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": ACT_CODE, "code": klass, "display": display},
        "type": [{"coding": [{"system": CONTACT_SYSTEM, "code": kind}]}],
        "subject": subject,
        "period": {"start": when},
        "serviceProvider": {"identifier": {"system": PARTNER_SYSTEM, "value": org}},
        "identifier": [{"system": source_system(SOURCE, "client-ref"), "value": f"{org}/{client}"}],
    }
    worker, note = row.get("worker", "").strip(), row.get("note", "").strip()
    if worker:
        encounter["participant"] = [{"individual": {"display": worker}}]
    if note:
        annotation = {"text": note, "time": when, **({"authorString": worker} if worker else {})}
        encounter["extension"] = [{"url": CONTACT_NOTE, "valueAnnotation": annotation}]
    encounter = finish(encounter, ids, SOURCE, *key)
    resources.append(encounter)
    if kind == "star-reading":
        scores = _scores(row)
        reading = finish(
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": STAR_QUESTIONNAIRE,
                "status": "completed",
                "subject": subject,
                "encounter": {"reference": f"Encounter/{encounter['id']}"},
                "authored": when,
                "item": [{"linkId": area, "answer": [{"valueInteger": score}]} for area, score in scores.items()],
            },
            ids,
            SOURCE,
            *key,
        )
        resources.append(reading)
        resources += [
            finish(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": STAR_SYSTEM, "code": area}]},
                    "subject": subject,
                    "encounter": {"reference": f"Encounter/{encounter['id']}"},
                    "effectiveDateTime": when,
                    "valueInteger": score,
                    "derivedFrom": [{"reference": f"QuestionnaireResponse/{reading['id']}"}],
                },
                ids,
                SOURCE,
                *key,
                area,
            )
            for area, score in scores.items()
        ]
    elif kind == "naloxone-supply":
        resources.append(
            finish(
                {
                    "resourceType": "MedicationDispense",
                    "status": "completed",
                    "type": {"coding": [{"system": CONTACT_SYSTEM, "code": "naloxone-supply"}]},
                    "medicationCodeableConcept": {"text": "Naloxone take-home kit"},
                    "subject": subject,
                    "context": {"reference": f"Encounter/{encounter['id']}"},
                    "whenHandedOver": when,
                },
                ids,
                SOURCE,
                *key,
            )
        )
    return Mapped("", resources, {subject["reference"]})


def read(data: bytes, ids: IdScheme, index: PatientIndex | None, name: str = "thirdsector.csv") -> Iterator[Mapped | Quarantined]:
    """Map every row; unreadable, unmappable or unmatched rows are quarantined with the reason."""
    text = data.decode("utf-8-sig", errors="replace")
    for location, row, problem in csv_rows(io.StringIO(text, newline=""), name):
        if problem or row is None:
            yield Quarantined(location, problem or "unreadable row")
            continue
        yield checked(location, row, lambda: map_row(row, ids, index))
