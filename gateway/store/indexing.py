"""What of a resource is searchable, and under which search parameter name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# search parameter -> the elements that hold references for it
REFERENCE_PARAMS: dict[str, tuple[str, ...]] = {
    "patient": ("subject", "patient", "for", "beneficiary"),
    "subject": ("subject", "for"),
    "owner": ("owner",),
    "focus": ("focus",),
    "part-of": ("partOf",),
    "based-on": ("basedOn",),
    "recipient": ("recipient",),
    "requester": ("requester",),
    "performer": ("performer",),
    "encounter": ("encounter",),
    "episode-of-care": ("episodeOfCare",),
    "organization": ("organization", "managingOrganization"),
    "practitioner": ("practitioner",),
    "target": ("target",),
}
# search parameter -> the element holding a code, CodeableConcept, Coding or Identifier
TOKEN_PARAMS: dict[str, str] = {
    "identifier": "identifier",
    "status": "status",
    "category": "category",
    "code": "code",
    "business-status": "businessStatus",
    "intent": "intent",
    "priority": "priority",
    "type": "type",
}
URI_PARAMS: dict[str, str] = {"questionnaire": "questionnaire"}
PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def patient_of(resource: dict[str, Any]) -> str | None:
    """The ``Patient/id`` whose record this resource belongs to, if any."""
    if resource["resourceType"] == "Patient":
        return f"Patient/{resource['id']}"
    for element in PATIENT_ELEMENTS:
        for ref in _as_list(resource.get(element)):
            reference = ref.get("reference", "") if isinstance(ref, dict) else ""
            if reference.startswith("Patient/"):
                return reference
    return None


def _tokens(value: Any) -> Iterator[tuple[str, bool]]:
    """(token, is_identifier) pairs for one element value."""
    if isinstance(value, str):
        yield value, False
    elif isinstance(value, dict):
        if "coding" in value or "text" in value:
            for coding in value.get("coding", []):
                yield from _tokens(coding)
        elif "code" in value:
            yield value["code"], False
            if value.get("system"):
                yield f"{value['system']}|{value['code']}", False
        elif "value" in value:
            yield value["value"], True
            if value.get("system"):
                yield f"{value['system']}|{value['value']}", True


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def demographic_keys(given: str, family: str, birth_date: str) -> tuple[str, str]:
    """Keys for matching a person without an identifier: (given+family+birth date, family+birth date)."""
    return f"{_fold(given)}|{_fold(family)}|{birth_date}", f"{_fold(family)}|{birth_date}"


def index_entries(resource: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """Every (param, value, is_identifier) the resource should be found by.

    Patients are also indexed by blinded demographic keys (internal params
    ``_person`` and ``_family-born``) so ingest can match people who arrive
    without a CHI, without the index holding names or birth dates in clear.
    Whatever could name a person (identifiers, those keys, conditional
    references) is flagged to be stored blind; the rest are codes, statuses
    and references by opaque id. Names, birth dates, addresses and telecom are
    never indexed.
    """
    if resource["resourceType"] == "Patient" and resource.get("birthDate"):
        for name in resource.get("name", []):
            for given in name.get("given", [])[:1]:
                person, family_born = demographic_keys(given, name.get("family", ""), resource["birthDate"])
                yield "_person", person, True
                yield "_family-born", family_born, True
    for param, elements in REFERENCE_PARAMS.items():
        for element in elements:
            for ref in _as_list(resource.get(element)):
                if isinstance(ref, dict) and ref.get("reference"):
                    # A conditional reference ("Patient?identifier=...|<CHI>") names the person.
                    yield param, ref["reference"], "?" in ref["reference"]
    for param, element in TOKEN_PARAMS.items():
        for value in _as_list(resource.get(element)):
            for token, is_identifier in _tokens(value):
                yield param, token, is_identifier
    for param, element in URI_PARAMS.items():
        value = resource.get(element)
        if isinstance(value, str):
            yield param, value, False
