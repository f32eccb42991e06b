"""The practice, its users and its patients: references to the first two, Patient + RelatedPerson.

A patient's CHI comes from ``ChiNumber`` when the extract has it, else from
``NhsNumber`` when that holds a CHI (Scottish practices keep the CHI there). A
number that starts with a real date of birth is read as a CHI and must be valid
for this person; one that does not (an English or Welsh NHS number) is kept as
an NHS number. A patient with a CHI gets the Patient id every source shares. One
without is found by the practice's own id (stored by an earlier extract), else by
one certain match on name and birth date (+ postcode); failing both, they keep a
practice-local id and are put up for match review, never merged on a guess.

``Deleted=true`` removes the practice-local Patient and the carer. A Patient keyed
by CHI is the person every source shares, so a GP delta never deletes it.

``SpineSensitive=true`` marks restricted contact details: the address, phone
numbers and email are left off the Patient and the record
is labelled R, as ``IsConfidential=true`` also does.
"""

from __future__ import annotations

from typing import Any

from adapters.common import Mapped, RecordProblem, birth_date
from adapters.emis.extract import SOURCE, Extract, Key, confidential, effective, flag, guid, local_patient_identifier, pruned, record_key
from adapters.identity import PatientIndex, checked_chi, existing_by_chi, match_person
from mappings.codes import relationship_concept
from mappings.identifiers import CHI_SYSTEM, NHS_NUMBER_SYSTEM, ODS_SYSTEM, chi_birth_date, nhs_number_is_valid, person_number, source_system

SEXES = {"M": "male", "F": "female", "U": "unknown", "I": "other"}


def organisation(row: dict[str, str], extract: Extract) -> Mapped:
    """A practice (or other EMIS organisation): named by its ODS code (else its GUID) in what
    refers to it. The directory comes from ``conf/``, never from an extract, so no Organization is made."""
    org = guid(row["OrganisationGuid"])
    if not org:
        raise RecordProblem("OrganisationGuid is required")
    effective(row, "OpenDate")
    effective(row, "CloseDate")
    identifier = {"system": ODS_SYSTEM, "value": row["ODSCode"]} if row["ODSCode"] else {"system": source_system(SOURCE, "organisation-guid"), "value": org}
    extract.organisations[org] = pruned({"identifier": identifier, "display": row["OrganisationName"]})
    return Mapped("", [])


def user(row: dict[str, str], extract: Extract) -> Mapped:
    """A practice user in role: named by their EMIS id and name in what refers to them
    (directory entries come from ``conf/``, so no Practitioner is made)."""
    key = record_key(row, "UserInRoleGuid")
    name = " ".join(p for p in (row["Title"], row["GivenName"], row["Surname"]) if p)
    extract.users[key] = pruned({"identifier": {"system": source_system(SOURCE, "user-in-role-guid"), "value": key[1]}, "display": name})
    return Mapped("", [])


def patient(row: dict[str, str], extract: Extract, index: PatientIndex | None) -> Mapped:
    """A registered patient (and their carer, when named), or the deletion of both."""
    key = record_key(row, "PatientGuid")
    carer_key = (*key, "carer")
    if flag(row, "Deleted"):
        return Mapped("", [], deletions=[("Patient", extract.ids.record(SOURCE, "Patient", *key)), ("RelatedPerson", extract.ids.record(SOURCE, "RelatedPerson", *carer_key))])
    born = effective(row, "DateOfBirth")
    if born:
        birth_date(born, "DateOfBirth")
    gender = SEXES.get(row["Sex"].upper() or "U")
    if gender is None:
        raise RecordProblem(f"Sex {row['Sex']!r} is not M, F, U or I")
    chi, nhs_number = _person_numbers(row, born, gender)
    restricted = flag(row, "SpineSensitive")
    identifiers = [{"system": CHI_SYSTEM, "value": chi}] if chi else []
    if nhs_number:
        identifiers.append({"system": NHS_NUMBER_SYSTEM, "value": nhs_number})
    system, value = local_patient_identifier(key)
    identifiers.append({"system": system, "value": value, "assigner": extract.organisation_ref(key[0])})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": [_name(row, [row["GivenName"], *row["MiddleNames"].split()], use="official")],
        "address": [_address(row)] if not restricted else [],
        "telecom": _telecom(row) if not restricted else [],
        "gender": gender,
        "birthDate": born,
        "deceasedDateTime": effective(row, "DateOfDeath"),
        "generalPractitioner": [r for r in (extract.user_ref(key[0], row["UsualGpUserInRoleGuid"]), extract.organisation_ref(key[0])) if r],
        "managingOrganization": extract.organisation_ref(key[0]),
    }
    confidential(resource, row, "IsConfidential", "SpineSensitive")
    mapped_patient = extract.finish(pruned(resource), *key)
    reviews: list[dict[str, Any]] = []
    if chi:
        patient_id = existing_by_chi(index, chi) or extract.ids.person(chi)
    else:
        patient_id = _without_chi(mapped_patient, key, row["Postcode"], index, reviews)
    mapped_patient["id"] = patient_id
    patient_ref = f"Patient/{patient_id}"
    resources = [mapped_patient]
    if row["CarerName"]:
        carer = {
            "resourceType": "RelatedPerson",
            "patient": {"reference": patient_ref},
            "name": [{"text": row["CarerName"]}],
            "relationship": [relationship_concept(row["CarerRelation"])],
        }
        resources.append(extract.finish(confidential(carer, row, "IsConfidential", "SpineSensitive"), *carer_key))
    return Mapped("", resources, {patient_ref}, reviews=reviews)


def _without_chi(patient: dict[str, Any], key: Key, postcode: str, index: PatientIndex | None, reviews: list[dict[str, Any]]) -> str:
    """The Patient id of someone without a CHI; adds a match-review entry when no certain match exists."""
    if index is not None:
        stored = index.by_identifier(*local_patient_identifier(key))
        if stored:
            return stored
    name = patient["name"][0]
    given, family, born = (name.get("given") or [""])[0], name.get("family", ""), patient.get("birthDate")
    match = match_person(index, given=given, family=family, birth_date=born, postcode=postcode or None) if family and born else None
    if match is not None and match.patient_id:
        return match.patient_id
    reviews.append(
        {
            "reason": "no CHI: kept under the practice's own id",
            "patient": f"Patient/{patient['id']}",
            "identifier": "|".join(local_patient_identifier(key)),
            "given": given,
            "family": family,
            "birth_date": born,
            "candidates": (match.review or {}).get("candidates", []) if match is not None else [],
        }
    )
    return str(patient["id"])


def _person_numbers(row: dict[str, str], birth_date: str | None, gender: str) -> tuple[str | None, str | None]:
    """(CHI, NHS number) of the patient; RecordProblem when a CHI is given but wrong."""
    if row["ChiNumber"]:
        return checked_chi(person_number(row["ChiNumber"]), birth_date, gender), None
    number = person_number(row["NhsNumber"])
    if not number:
        return None, None
    if nhs_number_is_valid(number) and chi_birth_date(number) is None:
        return None, number
    return checked_chi(number, birth_date, gender), None


def _name(row: dict[str, str], given: list[str], use: str | None = None) -> dict[str, Any]:
    return pruned({"use": use, "family": row["Surname"], "given": given, "prefix": [row["Title"]]})


def _address(row: dict[str, str]) -> dict[str, Any] | None:
    parts = {"line": [row[c] for c in ("HouseNameFlatNumber", "NumberAndStreet", "Village")], "city": row["Town"], "district": row["County"], "postalCode": row["Postcode"]}
    return pruned({"use": "home", **parts}) if pruned(parts) else None


def _telecom(row: dict[str, str]) -> list[dict[str, str]]:
    points = (("phone", "home", "HomePhone"), ("phone", "mobile", "MobilePhone"), ("email", "home", "EmailAddress"))
    return [{"system": system, "use": use, "value": row[column]} for system, use, column in points if row[column]]

