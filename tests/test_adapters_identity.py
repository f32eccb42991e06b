"""One Patient per person: CHI first, then a certain match on name and birth date (+ postcode), else review."""

from __future__ import annotations

from adapters.identity import MemoryPatientIndex, match_person, patient_id_for_chi


def index_with_ann() -> MemoryPatientIndex:
    index = MemoryPatientIndex()
    index.add("ann", identifiers=[("https://fhir.nhs.uk/Id/chi-number", "0101800002")], given="Ann", family="Reid", birth_date="1980-01-01", postcode="DD3 6AB")
    return index


def test_a_chi_gives_the_same_patient_id_from_every_source() -> None:
    assert patient_id_for_chi("0101800002") == patient_id_for_chi("0101800002") != patient_id_for_chi("1206750014")


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
