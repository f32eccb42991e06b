"""FHIR R4 rendering of the partner directory: Organization, Practitioner and PractitionerRole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.conf.schemas import Organization, Person

ORGANIZATION_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/organization-type"
PRACTITIONER_ROLE_SYSTEM = "https://pathway.scot/CodeSystem/practitioner-role"
PRACTITIONER_SYSTEM = "https://pathway.scot/Id/practitioner"
PRACTITIONER_ROLE_ID_SYSTEM = "https://pathway.scot/Id/practitioner-role"

ORGANIZATION_TYPE_DISPLAY: dict[str, str] = {
    "hscp": "Health and Social Care Partnership",
    "gp-practice": "GP practice",
    "recovery-service": "Drug and alcohol recovery service",
    "third-sector": "Third-sector recovery agency",
    "advocacy": "Independent advocacy service",
    "rehab-facility": "Residential rehabilitation facility",
    "carers-centre": "Carers' centre",
}
PERSON_ROLE_DISPLAY: dict[str, str] = {
    "key-worker": "Key worker",
    "social-worker": "Social worker",
    "nurse": "Nurse",
    "advocate": "Independent advocate",
    "community-team": "Community recovery team worker",
    "gp": "General practitioner",
    "facility-manager": "Facility manager",
}


def organization_resource(organization: Organization) -> dict[str, Any]:
    """The FHIR R4 Organization (directory resource: no person-data labels)."""
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": organization.id,
        "active": True,
        "identifier": [i.to_fhir() for i in organization.identifiers],
        "type": [
            {
                "coding": [
                    {
                        "system": ORGANIZATION_TYPE_SYSTEM,
                        "code": organization.type,
                        "display": ORGANIZATION_TYPE_DISPLAY[organization.type],
                    }
                ]
            }
        ],
        "name": organization.name,
        "address": [
            {
                "use": "work",
                "line": list(organization.address.lines),
                "city": organization.address.town,
                "district": organization.council_area,
                "postalCode": organization.address.postcode,
                "country": "GB",
            }
        ],
    }
    if organization.telecom and organization.telecom.to_fhir():
        resource["telecom"] = organization.telecom.to_fhir()
    return resource


def person_resources(person: Person) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(Practitioner, PractitionerRole)`` as FHIR R4 dicts, both with this person's id."""
    contact = person.telecom.to_fhir() if person.telecom else []
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": person.id,
        "active": True,
        "identifier": [{"system": PRACTITIONER_SYSTEM, "value": person.id}],
        "name": [{"use": "official", "family": person.name.family, "given": list(person.name.given)}],
    }
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": person.id,
        "active": True,
        "identifier": [{"system": PRACTITIONER_ROLE_ID_SYSTEM, "value": person.id}],
        "practitioner": {"reference": f"Practitioner/{person.id}", "display": person.name.text},
        "organization": {"reference": f"Organization/{person.organization}"},
        "code": [
            {"coding": [{"system": PRACTITIONER_ROLE_SYSTEM, "code": person.role, "display": PERSON_ROLE_DISPLAY[person.role]}]}
        ],
    }
    if contact:
        practitioner["telecom"] = contact
        role["telecom"] = contact
    return practitioner, role
