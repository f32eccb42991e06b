"""One Patient per person: CHI first, then a certain match on name and birth date (+ postcode), else review."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from adapters.common import IdScheme
from adapters.identity import MemoryPatientIndex, match_person

OLD_NAMESPACE = uuid.UUID("6f1c2b0e-5b7a-4c1e-9a55-7d0c6b3e2a10")  # the public namespace ids once came from


def index_with_ann() -> MemoryPatientIndex:
    index = MemoryPatientIndex()
    index.add("ann", identifiers=[("https://fhir.nhs.uk/Id/chi-number", "0101800002")], given="Ann", family="Reid", birth_date="1980-01-01", postcode="DD3 6AB")
    return index


def test_a_chi_gives_the_same_patient_id_from_every_organisation_under_one_key() -> None:
    key = bytes(range(32))
    hscp, agency = IdScheme(key, "https://fhir.nhs.uk/Id/ods-organization-code|S037"), IdScheme(key, "https://pathway.scot/Id/partner|x")
    assert hscp.person("0101800002") == agency.person("0101800002") != hscp.person("1206750014")
    # by hand: HMAC-SHA256 of "person/chi/<CHI>", first 16 bytes as a version-4 UUID
    digest = hmac.new(key, b"person/chi/0101800002", hashlib.sha256).digest()
    assert hscp.person("0101800002") == str(uuid.UUID(bytes=digest[:16], version=4))


def test_ids_need_the_key_and_are_scoped_to_the_pushing_organisation() -> None:
    one, other = IdScheme.random("a|1"), IdScheme.random("a|1")
    assert one.person("0101800002") != other.person("0101800002")
    assert one.person("0101800002") != str(uuid.uuid5(OLD_NAMESPACE, "person/chi/0101800002"))
    assert one.record("emis", "Encounter", "ORG", "G1") != IdScheme(one.key, "a|2").record("emis", "Encounter", "ORG", "G1")
    assert one.record("emis", "Encounter", "ORG", "G1") == IdScheme(one.key, "a|1").record("emis", "Encounter", "ORG", "G1")


def test_name_and_birth_date_match_whatever_the_case_spacing_or_hyphens() -> None:
    assert match_person(index_with_ann(), given=" ann ", family="REID", birth_date="1980-01-01").patient_id == "ann"


def test_a_postcode_must_agree_only_when_both_sides_have_one() -> None:
    index = index_with_ann()
    assert match_person(index, given="Ann", family="Reid", birth_date="1980-01-01", postcode="dd36ab").patient_id == "ann"
    assert match_person(index, given="Ann", family="Reid", birth_date="1980-01-01").patient_id == "ann"
    moved = match_person(index, given="Ann", family="Reid", birth_date="1980-01-01", postcode="G1 1AA")
    assert moved.patient_id is None and moved.review is not None


def test_a_near_miss_goes_to_review_with_its_candidates_not_a_merge() -> None:
    near = match_person(index_with_ann(), given="Anne", family="Reid", birth_date="1980-01-01")
    assert near.patient_id is None and near.review == {"given": "Anne", "family": "Reid", "birth_date": "1980-01-01", "candidates": ["Patient/ann"]}


def test_two_people_alike_are_never_merged_on_a_guess() -> None:
    index = index_with_ann()
    index.add("other-ann", given="Ann", family="Reid", birth_date="1980-01-01")
    both = match_person(index, given="Ann", family="Reid", birth_date="1980-01-01")
    assert both.patient_id is None and both.review is not None and set(both.review["candidates"]) == {"Patient/ann", "Patient/other-ann"}


def test_someone_unknown_is_neither_matched_nor_reviewed() -> None:
    assert match_person(index_with_ann(), given="Joe", family="Bloggs", birth_date="1990-03-04").review is None
