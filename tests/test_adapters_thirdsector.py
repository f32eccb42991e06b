"""Third-sector contacts and Outcome Star readings: what each row becomes, and what is held back."""

from __future__ import annotations

from typing import Any

import adapters
from adapters.common import IdScheme
from adapters import MemoryPatientIndex

AGENCY = {"system": "https://pathway.scot/Id/partner", "value": "tayside-recovery-network"}
AGENCY_IDS = IdScheme.random("https://pathway.scot/Id/partner|tayside-recovery-network")
HEADER = (
    "org_id,client_ref,chi,given_name,family_name,birth_date,contact_date,contact_type,worker,note,star_drug_use,star_alcohol_use,"
    "star_physical_health,star_meaningful_use_of_time,star_community,star_emotional_health,star_accommodation,star_money,"
    "star_offending,star_family_relationships"
)
SCORES = "4,6,5,3,5,4,7,3,8,5"


def ingest(*rows: str, index: MemoryPatientIndex | None = None) -> adapters.IngestResult:
    return adapters.ingest("thirdsector", "\n".join([HEADER, *rows]).encode(), ids=AGENCY_IDS, index=index)


def row(contact_type: str, scores: str = ",,,,,,,,,", chi: str = "0101800002", given: str = "Ann") -> str:
    return f"tayside-recovery-network,TRN-1,{chi},{given},Reid,1980-01-01,2026-10-12,{contact_type},Kim,,{scores}"


def of_type(result: adapters.IngestResult, kind: str) -> list[dict[str, Any]]:
    return [r for r in result.resources if r["resourceType"] == kind]


def test_a_star_reading_is_one_response_and_one_observation_per_area() -> None:
    result = ingest(row("star-reading", SCORES))
    response = of_type(result, "QuestionnaireResponse")[0]
    assert response["questionnaire"] == "https://pathway.scot/Questionnaire/outcome-star"
    assert [(i["linkId"], i["answer"][0]["valueInteger"]) for i in response["item"]][:2] == [("drug-use", 4), ("alcohol-use", 6)]
    observations = of_type(result, "Observation")
    assert len(observations) == 10
    assert all(o["code"]["coding"][0]["system"] == "https://pathway.scot/CodeSystem/outcome-star-area" and 1 <= o["valueInteger"] <= 10 for o in observations)


def test_an_out_of_range_or_non_integer_score_holds_back_the_whole_reading() -> None:
    for bad in ("4,6,5,3,0,4,7,3,8,5", "4,6,5,3,5.5,4,7,3,8,5", "4,6,5,3,,4,7,3,8,5"):
        result = ingest(row("star-reading", bad))
        assert result.resources == [] and "Outcome Star community score" in result.quarantined[0].reason


def test_a_naloxone_supply_is_a_dispense_labelled_opioid_use() -> None:
    dispense = of_type(ingest(row("naloxone-supply")), "MedicationDispense")[0]
    assert {"OPIOIDUD", "SUD"} <= {s["code"] for s in dispense["meta"]["security"]}


def test_a_row_without_chi_is_matched_by_name_and_birth_date_or_held_back_as_unmatched() -> None:
    index = MemoryPatientIndex()
    index.add("ann", given="Ann", family="Reid", birth_date="1980-01-01")
    matched = ingest(row("phone", chi=""), index=index)
    assert of_type(matched, "Encounter")[0]["subject"] == {"reference": "Patient/ann"}
    unmatched = ingest(row("phone", chi="", given="Joe"), index=index)
    assert unmatched.resources == [] and unmatched.quarantined[0].reason.startswith("unmatched")


def test_a_bad_chi_is_held_back() -> None:
    result = ingest(row("phone", chi="0101801234"))
    assert result.quarantined[0].reason == "CHI 0101801234 fails the modulus-11 check"


def test_an_agency_not_in_the_directory_is_kept_and_reported() -> None:
    result = adapters.ingest("thirdsector", "\n".join([HEADER, row("group")]).encode(), ids=AGENCY_IDS, known_organisations={"someone-else"})
    assert result.report()["unknown_organisations"] == ["tayside-recovery-network"] and result.report()["accepted"] == 1
