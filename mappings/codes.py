"""Code tables kept as data files in ``mappings/codes/``: loaded once, read as plain dicts."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

CODES_DIR = Path(__file__).with_name("codes")
SNOMED_SYSTEM = "http://snomed.info/sct"
READ_V2_SYSTEM = "http://read.info/readv2"
EMIS_CODE_SYSTEM = "https://pathway.scot/CodeSystem/emis-code-id"
ROLE_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ORGANIZATION_TYPE_SYSTEM = "https://pathway.scot/CodeSystem/organization-type"


def _table(name: str) -> list[dict[str, str]]:
    with (CODES_DIR / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@lru_cache(maxsize=1)
def read_v2_to_snomed() -> dict[str, str]:
    """Read v2 code (5 characters) -> SNOMED CT concept id, for coding rows that lack one."""
    return {row["read_code"]: row["snomed_concept_id"] for row in _table("readv2_snomed.csv")}


@lru_cache(maxsize=1)
def relationship_codes() -> dict[str, str]:
    """A carer's relationship in words (lower case) -> HL7 v3 RoleCode."""
    return {row["relationship"]: row["v3_role_code"] for row in _table("relationships.csv")}


def relationship_concept(relationship: str) -> dict[str, object]:
    """A RelatedPerson.relationship concept: coded when the word is known, else text only."""
    text = relationship.strip().lower() or "carer"
    code = relationship_codes().get(text)
    if code is None:
        return {"text": text}
    return {"coding": [{"system": ROLE_CODE_SYSTEM, "code": code}], "text": text}


@dataclass(frozen=True)
class Table:
    """One table of a GP extract: its file and ``field -> source column``."""

    file: str
    columns: dict[str, str]

    @property
    def renames(self) -> bool:
        return any(field != column for field, column in self.columns.items())


@dataclass(frozen=True)
class ExtractLayout:
    """Where a GP system keeps what Pathway reads (``mappings/codes/gp_extracts.yaml``)."""

    tables: dict[str, Table]


@lru_cache(maxsize=None)
def extract_layout(system: str) -> ExtractLayout:
    """The column map of one GP system's extract (``emis``, later ``vision``)."""
    document = yaml.safe_load((CODES_DIR / "gp_extracts.yaml").read_text(encoding="utf-8"))
    if system not in document:
        raise KeyError(f"no extract layout for {system!r}")
    entry = dict(document[system])
    tables = {}
    for name, table in entry.items():
        columns: dict[str, str] = {}
        for item in table["fields"]:
            columns.update(item if isinstance(item, dict) else {item: item})
        tables[name] = Table(table["file"], columns)
    return ExtractLayout(tables)
