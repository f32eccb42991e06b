"""Reading a whole EMIS extract in order: codes and problems, the practice and its people, then the care record.

Only lookups are held (codes, organisations, users, patients, problems); the
care-record and prescribing tables are streamed a row at a time, so memory does
not grow with their length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path

from adapters.common import Files, IdScheme, IngestError, Mapped, Quarantined, RecordProblem, checked
from adapters.emis import admin, care_record, prescribing
from adapters.emis.coding import load_codes
from adapters.emis.extract import Extract, record_key
from adapters.identity import PatientIndex
from mappings.codes import extract_layout

Mapper = Callable[[dict[str, str], Extract], Mapped]
STREAMED: tuple[tuple[str, Mapper], ...] = (
    ("consultations", care_record.consultation),
    ("observations", care_record.observation),
    ("drug_records", prescribing.drug_record),
    ("issue_records", prescribing.issue_record),
)


def read(
    data: bytes | Path, ids: IdScheme, index: PatientIndex | None, foreign: Mapping[str, str] | None = None
) -> Iterator[Mapped | Quarantined]:
    """Map every record of an EMIS extract (a folder or a zip); what cannot be mapped is quarantined with why.

    Raises IngestError when the input is not an EMIS extract at all, or when it carries
    records of an organisation in ``foreign`` (OrganisationGuid -> name; see :class:`Extract`).
    """
    extract = Extract(Files(data), extract_layout("emis"), ids, foreign or {}, index=index)
    if not extract.present():
        names = ", ".join(spec.file for spec in extract.layout.tables.values())
        raise IngestError(f"no EMIS extract files found (expected some of {names})")
    yield from load_codes(extract)
    yield from care_record.load_problems(extract)
    yield from (item for _, item in _mapped(extract, "organisations", admin.organisation))
    yield from (item for _, item in _mapped(extract, "users", admin.user))
    yield from _patients(extract, index)
    for table, mapper in STREAMED:
        yield from (item for _, item in _mapped(extract, table, mapper))


def _patients(extract: Extract, index: PatientIndex | None) -> Iterator[Mapped | Quarantined]:
    """Patients, remembering each one's Patient id (or why it was not loaded) for the rows that follow."""
    for row, item in _mapped(extract, "patients", partial(admin.patient, index=index)):
        if row is not None:
            try:
                key = record_key(row, "PatientGuid")
            except RecordProblem:
                key = None
            if key is not None and isinstance(item, Quarantined):
                extract.withheld[key] = f"quarantined at {item.location}"
            elif key is not None and item.deletions:
                extract.withheld[key] = f"deleted at {item.location}"
            elif key is not None:
                extract.patients[key] = item.resources[0]["id"]
        yield item


def _mapped(extract: Extract, table: str, mapper: Mapper) -> Iterator[tuple[dict[str, str] | None, Mapped | Quarantined]]:
    """(source row, its Mapped or Quarantined) for each row of a table."""
    for location, row, problem in extract.rows(table):
        if row is None:
            yield None, Quarantined(location, problem or "unreadable row")
            continue
        yield row, checked(location, row, lambda: mapper(row, extract))
