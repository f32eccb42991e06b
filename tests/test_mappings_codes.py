"""Code tables kept as data: Read v2 -> SNOMED CT, carer relationships, GP extract column maps."""

from __future__ import annotations

import pytest

from mappings.codes import ROLE_CODE_SYSTEM, extract_layout, read_v2_to_snomed, relationship_concept


def test_read_v2_codes_map_to_the_snomed_concepts_the_labels_know() -> None:
    table = read_v2_to_snomed()
    assert table["E240."] == "75544000"  # opioid dependence
    assert table["E23.."] == "66590003"  # alcohol dependence
    assert all(len(code) == 5 for code in table)


def test_a_known_relationship_is_coded_and_any_other_kept_as_text() -> None:
    assert relationship_concept("Mother") == {"coding": [{"system": ROLE_CODE_SYSTEM, "code": "MTH"}], "text": "mother"}
    assert relationship_concept("Support worker") == {"text": "support worker"}
    assert relationship_concept("") == {"text": "carer"}


def test_the_emis_layout_reads_every_file_the_design_names() -> None:
    layout = extract_layout("emis")
    files = {table.file for table in layout.tables.values()}
    assert {"Admin_Patient.csv", "CareRecord_Observation.csv", "Prescribing_IssueRecord.csv", "Coding_DrugCode.csv"} <= files
    assert layout.tables["patients"].columns["ChiNumber"] == "ChiNumber"
    # EMIS misspells one column; the field keeps the usual name
    assert layout.tables["drug_records"].columns["ClinicianUserInRoleGuid"] == "ClinicanUserInRoleGuid"


def test_an_unknown_gp_system_has_no_layout() -> None:
    with pytest.raises(KeyError, match="vision"):
        extract_layout("vision")
