"""What of a resource is searchable, and under which search parameter name."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone
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
# search parameter -> the elements (dotted paths) holding its date; indexed as sortable UTC text
DATE_PARAMS: dict[str, tuple[str, ...]] = {
    "authored": ("authored", "authoredOn"),
    "date": ("effectiveDateTime", "dateTime", "date", "period.start", "occurrenceDateTime"),
}
# Person search parameters: their values name a person, so they are only ever indexed blind.
PERSON_TYPES = frozenset({"Patient", "RelatedPerson"})
PERSON_PARAMS: dict[str, str] = {"name": "string", "family": "string", "given": "string", "birthdate": "date", "gender": "token"}
# Name prefixes indexed per word: up to 4 characters narrow a search to a few people; a longer
# query is checked on the decrypted candidates. Each prefix is a row (a Patient writes ~8, not ~20).
MAX_NAME_PREFIX = 4
# Search parameters found through the tokens of others (``name`` is any given or family name).
INDEXED_AS: dict[str, tuple[str, ...]] = {"name": ("given", "family")}
PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
# Parameters whose value picks out few resources (an identifier, a reference), so a search
# on one is best driven from the token index (see Repository.search).
SELECTIVE_PARAMS = frozenset({"identifier", *REFERENCE_PARAMS})


def elements_read(param: str) -> frozenset[str]:
    """The top-level elements a search parameter reads (none for ``_id``, ``_lastUpdated`` and
    the result parameters: an id and a meta are in every view)."""
    paths = (*REFERENCE_PARAMS.get(param, ()), *DATE_PARAMS.get(param, ()), *filter(None, (TOKEN_PARAMS.get(param), URI_PARAMS.get(param))))
    return frozenset(path.split(".")[0] for path in paths)


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


def fold_name(text: str) -> str:
    """A name as name search compares it: accents stripped (NFKD), case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _name_words(text: str) -> set[str]:
    """The name and each of its words (``Reid-Brown`` is found by ``reid`` and ``brown``)."""
    folded = fold_name(text)
    return {folded, *folded.replace("-", " ").split()} - {""}


def _name_prefixes(texts: list[str]) -> set[str]:
    return {word[:length] for text in texts for word in _name_words(text) for length in range(1, min(len(word), MAX_NAME_PREFIX) + 1)}


def _person_entries(resource: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """Blind-indexed name prefixes, birth date (day, month and year) and gender."""
    names = [n for n in resource.get("name", []) if isinstance(n, dict)]
    given = _name_prefixes([g for n in names for g in n.get("given", [])])
    family = _name_prefixes([n["family"] for n in names if n.get("family")])
    for param, prefixes in (("given", given), ("family", family)):
        for prefix in prefixes:
            yield param, prefix, True
    born = resource.get("birthDate")
    if isinstance(born, str):
        for length in (4, 7, 10):
            if len(born) >= length:
                yield "birthdate", born[:length], True
    if isinstance(resource.get("gender"), str):
        yield "gender", resource["gender"], True


def sortable_instant(value: str) -> str | None:
    """A FHIR date or dateTime as fixed-width UTC text that sorts in time order; None if unreadable."""
    day = value if "T" in value else (value + "-01-01")[:10]  # a year or month starts on its first day
    try:
        moment = datetime.fromisoformat(day.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _at(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


def index_entries(resource: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """Every (param, value, is_identifier) the resource should be found by.

    Patients are also indexed by blinded demographic keys (internal params
    ``_person`` and ``_family-born``) so ingest can match people who arrive
    without a CHI, without the index holding names or birth dates in clear.
    Whatever could name a person (identifiers, those keys, conditional
    references) is flagged to be stored blind; the rest are codes, statuses
    and references by opaque id. Names, birth dates, addresses and telecom are
    never indexed in clear: name prefixes, birth dates and gender of Patients
    and RelatedPersons are indexed blind only (name search is a blind match
    of the folded prefix).
    """
    if resource["resourceType"] in PERSON_TYPES:
        yield from _person_entries(resource)
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
    for param, paths in DATE_PARAMS.items():
        for path in paths:
            value = _at(resource, path)
            if isinstance(value, str) and (instant := sortable_instant(value)):
                yield param, instant, False
    for param, element in URI_PARAMS.items():
        value = resource.get(element)
        if isinstance(value, str):
            yield param, value, False
