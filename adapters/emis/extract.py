"""Reading an EMIS extract: its tables by field name, its value formats, and what is held while streaming.

Columns are found through the extract layout in ``mappings/codes/gp_extracts.yaml``
(field -> source column), so another GP system's extract is a new layout, not new
parsing. What the adapter holds in memory is bounded by codes, organisations,
users, patients and problems — never by care-record rows, which are streamed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from adapters.common import Files, ForeignRecords, IdScheme, Mapped, RecordProblem, csv_rows, finish, parse_date
from adapters.identity import PatientIndex
from mappings.codes import ExtractLayout
from mappings.identifiers import source_system
from mappings.labels import CONFIDENTIALITY_SYSTEM

SOURCE = "emis"
LOCAL_TIME = ZoneInfo("Europe/London")
PRECISIONS = ("YMDT", "YMD", "YM", "Y", "U")

Key = tuple[str, str]  # (OrganisationGuid, record Guid): EMIS ids are unique only within a practice


class ClinicalCode(NamedTuple):
    term: str
    read: str
    snomed: str


class DrugCode(NamedTuple):
    term: str
    dmd: str


@dataclass
class Extract:
    """The extract's layout, how its records get ids, and the lookups later tables need
    (bounded by codes and people).

    ``foreign`` names the EMIS organisations (OrganisationGuid -> name) that belong to
    organisations other than the one pushing: an extract carrying any of them is refused.
    """

    files: Files
    layout: ExtractLayout
    ids: IdScheme
    foreign: Mapping[str, str] = field(default_factory=dict)
    clinical: dict[str, ClinicalCode] = field(default_factory=dict)
    drugs: dict[str, DrugCode] = field(default_factory=dict)
    problems: dict[Key, dict[str, str]] = field(default_factory=dict)
    organisations: dict[str, dict[str, Any]] = field(default_factory=dict)  # GUID -> reference
    users: dict[Key, dict[str, Any]] = field(default_factory=dict)  # (organisation, user) -> reference
    patients: dict[Key, str] = field(default_factory=dict)
    withheld: dict[Key, str] = field(default_factory=dict)
    index: PatientIndex | None = None

    def rows(self, table: str) -> Iterator[tuple[str, dict[str, str] | None, str | None]]:
        """(location, row by field name, problem) for each row of one table; nothing when the file is absent."""
        spec = self.layout.tables[table]
        handle = self.files.open_text(spec.file)
        if handle is None:
            return
        with handle:
            for location, row, problem in csv_rows(handle, spec.file):
                if row is None:
                    yield location, None, problem
                    continue
                fields = {name: row.get(column, "").strip() for name, column in spec.columns.items()}
                self._check_organisation(location, fields.get("OrganisationGuid", ""))
                yield location, fields, None

    def _check_organisation(self, location: str, organisation_guid: str) -> None:
        owner = self.foreign.get(guid(organisation_guid)) if organisation_guid else None
        if owner is not None:
            raise ForeignRecords(f"{location}: OrganisationGuid {guid(organisation_guid)} is {owner}'s; only {owner} may send its records")

    def present(self) -> bool:
        """Whether any table of the layout is in the input."""
        for spec in self.layout.tables.values():
            handle = self.files.open_text(spec.file)
            if handle is not None:
                handle.close()
                return True
        return False

    def patient_ref(self, row: dict[str, str]) -> str:
        """``Patient/{id}`` of the row's patient (from this extract, or stored from an earlier one)."""
        key = record_key(row, "PatientGuid")
        patient_id = self.patients.get(key)
        if patient_id is not None:
            return f"Patient/{patient_id}"
        if key in self.withheld:
            raise RecordProblem(f"PatientGuid {key[1]} was not loaded ({self.withheld[key]})")
        stored = self.index.by_identifier(*local_patient_identifier(key)) if self.index is not None else None
        if stored is not None:
            self.patients[key] = stored
            return f"Patient/{stored}"
        raise RecordProblem(f"PatientGuid {key[1]} is not in Admin_Patient.csv for organisation {key[0]}")

    def organisation_ref(self, org: str) -> dict[str, Any] | None:
        """A reference (by identifier) to the organisation, when the extract names a known one."""
        return self.organisations.get(org)

    def user_ref(self, org: str, user_guid: str) -> dict[str, Any] | None:
        """A reference (by identifier) to the practice user, when the extract names a known one."""
        return self.users.get((org, guid(user_guid)))

    def reference(self, resource_type: str, *key: str) -> str:
        """The reference to the resource an EMIS record becomes (its id is deterministic)."""
        return f"{resource_type}/{self.ids.record(SOURCE, resource_type, *key)}"

    def finish(self, resource: dict[str, Any], *key: str) -> dict[str, Any]:
        """Give a built resource its id, ``meta.source`` and labels."""
        return finish(resource, self.ids, SOURCE, *key)

    def deleted(self, key: Key, *resource_types: str) -> Mapped:
        """The deletion of what an EMIS record became (``Deleted=true`` in a delta)."""
        return Mapped("", [], deletions=[(t, self.ids.record(SOURCE, t, *key)) for t in resource_types])


def guid(value: str) -> str:
    """An EMIS GUID without its braces, upper case (extracts differ in both)."""
    return value.strip().strip("{}").strip().upper()


def local_patient_identifier(key: Key) -> tuple[str, str]:
    """(system, value) of the practice's own patient id: GUIDs are unique only within a practice."""
    return source_system(SOURCE, "patient-guid"), f"{key[0]}/{key[1]}"


def record_key(row: dict[str, str], column: str) -> Key:
    """(OrganisationGuid, the row's GUID in ``column``); RecordProblem when either is empty."""
    org, record = guid(row.get("OrganisationGuid", "")), guid(row.get(column, ""))
    if not org or not record:
        raise RecordProblem(f"OrganisationGuid and {column} are both required")
    return org, record


def flag(row: dict[str, str], column: str) -> bool:
    """An EMIS boolean: ``true``/``false`` (any case); empty is false."""
    value = row.get(column, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise RecordProblem(f"{column} {row[column]!r} is not true or false")


def number(row: dict[str, str], column: str) -> int | float | None:
    """A numeric column as int or float; None when empty."""
    value = row.get(column, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise RecordProblem(f"{column} {value!r} is not a number") from None


def effective(row: dict[str, str], column: str, precision_column: str | None = None) -> str | None:
    """A date of EMIS precision (YMDT, YMD, YM, Y, U) as a FHIR dateTime of that precision.

    ``U`` means the date is unknown: no date. A time is read as UK local time.
    """
    value = row.get(column, "")
    precision = (row.get(precision_column, "") if precision_column else "").upper() or "YMD"
    if precision not in PRECISIONS:
        raise RecordProblem(f"{precision_column} {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "U":
        return None
    if not value:
        if precision_column and row.get(precision_column):
            raise RecordProblem(f"{column} is empty but {precision_column} is {precision}")
        return None
    day_text, _, time_text = value.replace("T", " ").partition(" ")
    day = parse_date(day_text, column)
    if precision == "Y":
        return day[:4]
    if precision == "YM":
        return day[:7]
    if precision == "YMD" or not time_text:
        return day
    try:
        moment = time.fromisoformat(time_text)
    except ValueError:
        raise RecordProblem(f"{column} time {time_text!r} is not a real time (HH:MM:SS)") from None
    return datetime.combine(date.fromisoformat(day), moment, LOCAL_TIME).isoformat()


def pruned(value: Any) -> Any:
    """The value without empty elements, at any depth (FHIR forbids empty strings, lists and objects)."""
    if isinstance(value, dict):
        kept = ((k, pruned(v)) for k, v in value.items())
        return {k: v for k, v in kept if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in map(pruned, value) if v not in (None, "", [], {})]
    return value


def confidential(resource: dict[str, Any], row: dict[str, str], *columns: str) -> dict[str, Any]:
    """Label the resource confidentiality R when any of these flags is set (before ``finish``)."""
    if any(flag(row, c) for c in columns):
        resource.setdefault("meta", {}).setdefault("security", []).append({"system": CONFIDENTIALITY_SYSTEM, "code": "R"})
    return resource
