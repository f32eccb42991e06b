"""The extract's own code lists (Coding_ClinicalCode.csv, Coding_DrugCode.csv) and the concepts they give.

A record's CodeId is looked up here; a CodeId absent from the coding files
quarantines that record only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from adapters.common import Quarantined, RecordProblem
from adapters.emis.extract import ClinicalCode, DrugCode, Extract
from mappings.codes import EMIS_CODE_SYSTEM, READ_V2_SYSTEM, SNOMED_SYSTEM, read_v2_to_snomed


def load_codes(extract: Extract) -> Iterator[Quarantined]:
    """Fill the extract's code dicts; yields the coding rows that cannot be read."""
    for location, row, problem in extract.rows("clinical_codes"):
        if row is None or not row["CodeId"]:
            yield Quarantined(location, problem or "CodeId is empty")
            continue
        extract.clinical[row["CodeId"]] = ClinicalCode(row["Term"], row["ReadTermId"], row["SnomedCTConceptId"])
    for location, row, problem in extract.rows("drug_codes"):
        if row is None or not row["CodeId"]:
            yield Quarantined(location, problem or "CodeId is empty")
            continue
        extract.drugs[row["CodeId"]] = DrugCode(row["Term"], row["DmdProductCodeId"])


def clinical_concept(extract: Extract, code_id: str) -> dict[str, Any]:
    """SNOMED CT, Read v2 and EMIS codings for a clinical CodeId, with the practice's term as text."""
    code = extract.clinical.get(code_id)
    if code is None:
        raise RecordProblem(f"CodeId {code_id!r} is not in Coding_ClinicalCode.csv")
    # Older coding rows carry only a Read code; the SNOMED concept then comes from the national map.
    snomed = code.snomed or read_v2_to_snomed().get(code.read[:5])
    codings = [{"system": SNOMED_SYSTEM, "code": snomed}] if snomed else []
    if code.read:
        codings.append({"system": READ_V2_SYSTEM, "code": code.read[:5]})
    codings.append({"system": EMIS_CODE_SYSTEM, "code": code_id})
    return {"coding": codings, "text": code.term}


def drug_concept(extract: Extract, code_id: str) -> dict[str, Any]:
    """The dm+d product (as SNOMED CT) and EMIS codings for a drug CodeId, with its term as text."""
    code = extract.drugs.get(code_id)
    if code is None:
        raise RecordProblem(f"CodeId {code_id!r} is not in Coding_DrugCode.csv")
    codings = [{"system": SNOMED_SYSTEM, "code": code.dmd}] if code.dmd else []
    codings.append({"system": EMIS_CODE_SYSTEM, "code": code_id})
    return {"coding": codings, "text": code.term}
