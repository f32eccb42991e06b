"""The practice, its users and its patients: Organization, Practitioner + PractitionerRole, Patient + RelatedPerson.

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

from adapters.common import Mapped, RecordProblem, finish, resource_id
from adapters.emis.extract import SOURCE, Extract, Key, confidential, effective, flag, guid, local_patient_identifier, pruned, record_key
from adapters.identity import PatientIndex, checked_chi, existing_by_chi, match_person, patient_id_for_chi
from mappings.codes import ORGANIZATION_TYPE_SYSTEM, relationship_concept
from mappings.identifiers import CHI_SYSTEM, NHS_NUMBER_SYSTEM, ODS_SYSTEM, chi_birth_date, nhs_number_is_valid, source_system

SEXES = {"M": "male", "F": "female", "U": "unknown", "I": "other"}
JOB_CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/emis-job-category"


def organisation(row: dict[str, str], extract: Extract) -> Mapped:
    """A practice (or other EMIS organisation) as an Organization with its ODS code."""
    org = guid(row["OrganisationGuid"])
    if not org:
        raise RecordProblem("OrganisationGuid is required")
    kind = extract.layout.organisation_types.get(row["OrganisationType"].lower(), extract.layout.default_organisation_type)
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": [{"system": source_system(SOURCE, "organisation-guid"), "value": org}],
        "active": not effective(row, "CloseDate"),
        "type": [{"coding": [{"system": ORGANIZATION_TYPE_SYSTEM, "code": kind}], "text": row["OrganisationType"]}],
        "name": row["OrganisationName"] or None,
    }
    if row["ODSCode"]:
        resource["identifier"].insert(0, {"system": ODS_SYSTEM, "value": row["ODSCode"]})
    opened = effective(row, "OpenDate")
    if opened:
        resource["extension"] = [{"url": "https://pathway.scot/StructureDefinition/opened", "valueDate": opened}]
    return Mapped("", [finish(pruned(resource), SOURCE, org)])


def user(row: dict[str, str], extract: Extract) -> Mapped:
    """A practice user in role: the Practitioner and their PractitionerRole at the organisation."""
    key = record_key(row, "UserInRoleGuid")
    practitioner = finish(
        pruned(
            {
                "resourceType": "Practitioner",
                "identifier": [{"system": source_system(SOURCE, "user-in-role-guid"), "value": key[1]}],
                "name": [_name(row, [row["GivenName"]])],
            }
        ),
        SOURCE,
        *key,
    )
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": f"Practitioner/{practitioner['id']}"},
        "organization": extract.organisation_ref(key[0]),
    }
    if row["JobCategoryCode"] or row["JobCategoryName"]:
        coding = [{"system": JOB_CATEGORY_SYSTEM, "code": row["JobCategoryCode"]}] if row["JobCategoryCode"] else []
        role["code"] = [{"coding": coding, "text": row["JobCategoryName"]}]
    return Mapped("", [practitioner, finish(pruned(role), SOURCE, *key)])


def patient(row: dict[str, str], extract: Extract, index: PatientIndex | None) -> Mapped:
    """A registered patient (and their carer, when named), or the deletion of both."""
    key = record_key(row, "PatientGuid")
    carer_key = (*key, "carer")
    if flag(row, "Deleted"):
        return Mapped("", [], deletions=[("Patient", resource_id(SOURCE, "Patient", *key)), ("RelatedPerson", resource_id(SOURCE, "RelatedPerson", *carer_key))])
    birth_date = effective(row, "DateOfBirth")
    gender = SEXES.get(row["Sex"].upper() or "U")
    if gender is None:
        raise RecordProblem(f"Sex {row['Sex']!r} is not M, F, U or I")
    chi, nhs_number = _person_numbers(row, birth_date, gender)
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
        "birthDate": birth_date,
        "deceasedDateTime": effective(row, "DateOfDeath"),
        "generalPractitioner": [r for r in (extract.user_ref(key[0], row["UsualGpUserInRoleGuid"]), extract.organisation_ref(key[0])) if r],
        "managingOrganization": extract.organisation_ref(key[0]),
    }
    confidential(resource, row, "IsConfidential", "SpineSensitive")
    mapped_patient = finish(pruned(resource), SOURCE, *key)
    reviews: list[dict[str, Any]] = []
    if chi:
        patient_id = existing_by_chi(index, chi) or patient_id_for_chi(chi)
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
        resources.append(finish(confidential(carer, row, "IsConfidential", "SpineSensitive"), SOURCE, *carer_key))
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
        return checked_chi(row["ChiNumber"].replace(" ", ""), birth_date, gender), None
    number = row["NhsNumber"].replace(" ", "")
    if not number:
        return None, None
    if len(number) == 10 and number.isdigit() and chi_birth_date(number) is None and nhs_number_is_valid(number):
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

