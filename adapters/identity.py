"""One Patient per person across sources: keyed on a valid CHI, matched carefully without one.

With a valid CHI (modulus-11, consistent with the birth date and sex) the
person's Patient id is derived from it under the installation's key
(:meth:`adapters.common.IdScheme.person`), so every source lands on the same
Patient. Without one, a person is matched deterministically on given name,
family name and birth date; anything less certain (same family name and birth
date, another given name) goes to a review list instead of a wrong merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from adapters.common import RecordProblem
from mappings.identifiers import CHI_SYSTEM, chi_problem


class PatientIndex(Protocol):
    """Lookups the store answers (the gateway implements it over its blind indexes)."""

    def by_identifier(self, system: str, value: str) -> str | None: ...

    def by_demographics(self, given: str, family: str, birth_date: str, postcode: str | None = None) -> list[str]: ...

    def near(self, family: str, birth_date: str) -> list[str]: ...


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def _postcode(text: str | None) -> str:
    return "".join((text or "").upper().split())


class MemoryPatientIndex:
    """An in-memory index for dry runs and tests."""

    def __init__(self) -> None:
        self._identifiers: dict[tuple[str, str], str] = {}
        self._people: dict[tuple[str, str, str], list[str]] = {}
        self._families: dict[tuple[str, str], list[str]] = {}
        self._postcodes: dict[str, str] = {}

    def add(
        self, patient_id: str, *, identifiers: list[tuple[str, str]] = (), given: str = "", family: str = "", birth_date: str = "", postcode: str = ""  # type: ignore[assignment]
    ) -> None:
        for identifier in identifiers:
            self._identifiers[identifier] = patient_id
        if postcode:
            self._postcodes[patient_id] = _postcode(postcode)
        if birth_date:
            self._people.setdefault((_fold(given), _fold(family), birth_date), []).append(patient_id)
            self._families.setdefault((_fold(family), birth_date), []).append(patient_id)

    def by_identifier(self, system: str, value: str) -> str | None:
        return self._identifiers.get((system, value))

    def by_demographics(self, given: str, family: str, birth_date: str, postcode: str | None = None) -> list[str]:
        """People with these names and birth date; when both sides have a postcode, it must agree too."""
        found = dict.fromkeys(self._people.get((_fold(given), _fold(family), birth_date), []))
        wanted = _postcode(postcode)
        return [p for p in found if not (wanted and self._postcodes.get(p)) or self._postcodes[p] == wanted]

    def near(self, family: str, birth_date: str) -> list[str]:
        return list(dict.fromkeys(self._families.get((_fold(family), birth_date), [])))


@dataclass(frozen=True)
class Match:
    """Who a source record is about: an existing or CHI-keyed Patient id, or a review case."""

    patient_id: str | None
    review: dict[str, object] | None = None


def checked_chi(chi: str, birth_date: str | None, gender: str | None) -> str:
    """The CHI, or RecordProblem naming why it is not this person's valid CHI."""
    problem = chi_problem(chi, birth_date, gender)
    if problem:
        raise RecordProblem(problem)
    return chi


def match_person(index: PatientIndex | None, *, given: str, family: str, birth_date: str, postcode: str | None = None) -> Match:
    """Match someone without a CHI: exactly one person with the same names and birth date."""
    if index is None:
        return Match(None)
    found = index.by_demographics(given, family, birth_date, postcode)
    if len(found) == 1:
        return Match(found[0])
    candidates = found or index.near(family, birth_date)
    if candidates:
        return Match(None, {"given": given, "family": family, "birth_date": birth_date, "candidates": [f"Patient/{c}" for c in candidates]})
    return Match(None)


def existing_by_chi(index: PatientIndex | None, chi: str) -> str | None:
    return index.by_identifier(CHI_SYSTEM, chi) if index is not None else None
