"""Identifier systems and the checks on UK person identifiers (DESIGN §3)."""

from __future__ import annotations

from datetime import date

CHI_SYSTEM = "https://fhir.nhs.uk/Id/chi-number"
CHI_OID = "urn:oid:2.16.840.1.113883.2.1.3.2.4.16.53"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
PARTNER_SYSTEM = "https://pathway.scot/Id/partner"
REFERRAL_SYSTEM = "https://pathway.scot/Id/referral"
EXTENSION_BASE = "https://pathway.scot/StructureDefinition/"  # Pathway's own extensions


def source_system(source: str, kind: str) -> str:
    """The identifier system for a source-local id, e.g. ``.../emis/patient-guid``."""
    return f"https://pathway.scot/Id/{source}/{kind}"


def canonical_person_system(system: str) -> str:
    """Map accepted synonyms (the CHI OID) to the canonical system."""
    return CHI_SYSTEM if system == CHI_OID else system


def _mod11_check_digit(first_nine: str) -> int | None:
    """The modulus-11 check digit shared by CHI and NHS numbers; None when 10 (invalid)."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def person_number(value: str) -> str:
    """A CHI or NHS number as written, without the spaces people group its digits with."""
    return "".join(value.split())


def ten_digits(value: str) -> bool:
    """Ten ASCII digits (``str.isdigit`` alone also takes full-width and Arabic-Indic digits)."""
    return len(value) == 10 and value.isascii() and value.isdigit()


def nhs_number_is_valid(value: str) -> bool:
    """True for a 10-digit number whose modulus-11 check digit is right."""
    if not ten_digits(value):
        return False
    return _mod11_check_digit(value[:9]) == int(value[9])


def chi_birth_date(value: str) -> date | None:
    """The date of birth a CHI encodes (century guessed as the latest not in the future)."""
    try:
        day, month, yy = int(value[0:2]), int(value[2:4]), int(value[4:6])
        today = date.today()
        year = 2000 + yy if 2000 + yy <= today.year else 1900 + yy
        born = date(year, month, day)
        return born if born <= today else date(year - 100, month, day)
    except ValueError:
        return None


def chi_sex(value: str) -> str:
    """FHIR gender from the CHI's ninth digit: odd male, even female."""
    return "male" if int(value[8]) % 2 else "female"


def chi_is_valid(value: str) -> bool:
    """A CHI is 10 digits, starts with a real date of birth and has a right check digit."""
    return nhs_number_is_valid(value) and chi_birth_date(value) is not None


def chi_problem(value: str, birth_date: str | None = None, gender: str | None = None) -> str | None:
    """Why ``value`` is not an acceptable CHI for this person, or None when it is."""
    if not ten_digits(value):
        return f"CHI {value!r} is not 10 digits"
    born = chi_birth_date(value)
    if born is None:
        return f"CHI {value} does not start with a real date of birth"
    if not nhs_number_is_valid(value):
        return f"CHI {value} fails the modulus-11 check"
    if birth_date and born.strftime("%d%m%y") != _ddmmyy(birth_date):
        return f"CHI {value} encodes a birth date other than {birth_date}"
    if gender in ("male", "female") and chi_sex(value) != gender:
        return f"CHI {value} encodes sex {chi_sex(value)}, record says {gender}"
    return None


def _ddmmyy(iso_date: str) -> str:
    return f"{iso_date[8:10]}{iso_date[5:7]}{iso_date[2:4]}"


def make_chi(birth_date: date, gender: str, serial: int) -> str:
    """A valid CHI for a synthetic person: the nth valid number for this birth date and sex."""
    want_odd = gender == "male"
    found = -1
    for n in range(1000):
        body = f"{birth_date:%d%m%y}{n:03d}"
        if (int(body[8]) % 2 == 1) != want_odd:
            continue
        check = _mod11_check_digit(body)
        if check is None:
            continue
        found += 1
        if found == serial:
            return f"{body}{check}"
    raise ValueError(f"no CHI number {serial} for {birth_date} {gender}")
