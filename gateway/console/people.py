"""Finding people and answering for them: consents, agreements, the disclosure ledger.

Names live only in encrypted resource bodies. A CHI number is found through the
store's blind ``identifier`` index, a full name with date of birth through the
blind ``_person`` demographic key; anything else (part of a name) decrypts and
scans Patients, which is fine at a partnership's scale and is audited like any
other look-up.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import Actor, audit_event
from gateway.audit.ledger import about_patient, ledger_entry
from gateway.audit.one_off import one_off_basis
from gateway.console.directory_names import Directory, person_name
from gateway.directory import current_agreements
from gateway.sharing.policy import grants
from gateway.store.indexing import demographic_keys
from gateway.store.models import DisclosureRow
from gateway.store.repository import Repository, Stored
from mappings.identifiers import CHI_SYSTEM, chi_problem

SCAN_LIMIT = 50
RECORDER_EXTENSION = "https://pathway.scot/StructureDefinition/consent-recorded-by"
WITNESS_EXTENSION = "https://pathway.scot/StructureDefinition/consent-witness"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class SearchProblem(ValueError):
    """The search cannot be run as typed; the message says what to change."""


@dataclass(frozen=True)
class PersonRow:
    id: str
    name: str
    chi: str
    birth_date: str
    gender: str

    @classmethod
    def of(cls, stored: Stored) -> "PersonRow":
        patient = stored.resource
        chi = next((i["value"] for i in patient.get("identifier", []) if i.get("system") == CHI_SYSTEM), "")
        return cls(stored.id, person_name(patient), chi, patient.get("birthDate", ""), patient.get("gender", ""))


def find_people(repo: Repository, query: str, birth_date: str = "") -> tuple[list[PersonRow], str]:
    """People matching ``query`` (CHI, or name) and how they were found."""
    text = " ".join(query.split())
    digits = text.replace(" ", "")
    if digits.isdigit():
        problem = chi_problem(digits)
        if problem:
            raise SearchProblem(f"{digits} is not a valid CHI number: {problem}")
        found = [s for _, s in repo.search("Patient", [("identifier", [f"{CHI_SYSTEM}|{digits}"])], batch=5)]
        return [PersonRow.of(s) for s in found], "CHI number (blind index)"
    if len(text) < 2:
        raise SearchProblem("type a CHI number, or at least two letters of a name")
    words = text.split(" ")
    if birth_date and len(words) >= 2:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", birth_date):
            raise SearchProblem("date of birth must be a date (YYYY-MM-DD)")
        person, family_born = demographic_keys(words[0], words[-1], birth_date)
        found = [s for _, s in repo.search("Patient", [("_person", [person])], batch=20)]
        found = found or [s for _, s in repo.search("Patient", [("_family-born", [family_born])], batch=20)]
        return [PersonRow.of(s) for s in found], "name and date of birth (blind demographic key)"
    needle = text.lower()
    matches = []
    for _, stored in repo.search("Patient", batch=200):
        row = PersonRow.of(stored)
        if needle in row.name.lower() and (not birth_date or row.birth_date == birth_date):
            matches.append(row)
            if len(matches) >= SCAN_LIMIT:
                break
    return sorted(matches, key=lambda r: r.name), "part of a name (records decrypted and scanned)"


# --- consents -----------------------------------------------------------------------------


def _extension_display(element: dict[str, Any], url: str) -> str:
    for extension in element.get("extension", []):
        if extension.get("url") == url:
            reference = extension.get("valueReference") or {}
            return reference.get("display") or reference.get("reference", "")
    return ""


@dataclass(frozen=True)
class ConsentVersion:
    version: int
    updated: str
    status: str
    recorded_by: str
    witnessed_by: str
    resource: dict[str, Any]
    recording_organization: str  # the organisation that wrote it ("system|value")
    grant_ignored: bool  # it grants, but that organisation may not record grants


def consent_versions(repo: Repository, consent_id: str, recorders: frozenset[str]) -> list[ConsentVersion]:
    """Every version of one Consent, newest first, with who recorded and witnessed it, and
    whether its grants are ignored because its organisation may not record consent."""
    versions = []
    for stored in repo.history("Consent", consent_id):
        consent = stored.resource
        witnesses = [_extension_display(v, WITNESS_EXTENSION) for v in consent.get("verification", [])]
        versions.append(
            ConsentVersion(
                stored.version_id,
                stored.last_updated.strftime("%Y-%m-%d %H:%M"),
                consent.get("status", ""),
                _extension_display(consent, RECORDER_EXTENSION),
                ", ".join(w for w in witnesses if w),
                consent,
                stored.custodian,
                grants(consent) and stored.custodian not in recorders,
            )
        )
    return versions


def person_consents(repo: Repository, patient: str, recorders: frozenset[str]) -> list[list[ConsentVersion]]:
    """The person's Consents (each as its version timeline), most recently changed first."""
    return [consent_versions(repo, stored.id, recorders) for _, stored in repo.search("Consent", patient=patient, batch=50)]


def applicable_agreements(session: Session, repo: Repository, patient: str) -> list[dict[str, Any]]:
    """Current agreements with a party that holds some of this person's records."""
    holders = {stored.custodian for _, stored in repo.search(None, patient=patient, batch=200)}
    return sorted(
        (a for a in current_agreements(session) if any(f"{p['system']}|{p['value']}" in holders for p in a.get("parties", []))),
        key=lambda a: a["id"],
    )


# --- the disclosure ledger ---------------------------------------------------------------


def ledger(session: Session, patient: str) -> list[dict[str, Any]]:
    """Who received what about the person, newest first."""
    rows = session.scalars(select(DisclosureRow).where(about_patient(session, patient)).order_by(DisclosureRow.at.desc(), DisclosureRow.id.desc()))
    return [ledger_entry(row) for row in rows]


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else " ".join(value) if isinstance(value, list) else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


LEDGER_COLUMNS = ("at", "recipient", "recipient_name", "acting_for", "client", "purpose", "channel", "resources", "agreements", "consents", "break_glass", "one_off")


def ledger_csv(entries: list[dict[str, Any]], directory: Directory) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEDGER_COLUMNS)
    for entry in entries:
        row = entry | {"recipient_name": directory.name_of(entry["recipient"])}
        writer.writerow([csv_cell(row[c]) for c in LEDGER_COLUMNS])
    return out.getvalue()


def subject_access_bundle(repo: Repository, patient: str, entries: list[dict[str, Any]], directory: Directory) -> dict[str, Any]:
    """A FHIR collection Bundle answering a subject-access request: the person, their
    consents (every version) and one AuditEvent per disclosure in the ledger."""
    person = repo.read("Patient", patient.split("/", 1)[1])
    resources: list[dict[str, Any]] = [person.resource]
    for _, consent in repo.search("Consent", patient=patient, batch=50):
        resources += [v.resource for v in repo.history("Consent", consent.id)]
    for entry in entries:
        basis = [f"agreements {', '.join(entry['agreements']) or 'none'}", f"consents {', '.join(entry['consents']) or 'none'}"]
        if entry["break_glass"]:
            basis.append(f"break-glass {entry['break_glass']}")
        if entry["one_off"]:
            basis.append(one_off_basis(repo.session, entry["one_off"]))
        event = audit_event(
            "disclose",
            Actor(entry["client"] or "", entry["recipient"], entry["acting_for"]),
            purpose=entry["purpose"],
            patient=patient,
            entities=entry["resources"],
            detail=f"disclosed to {directory.name_of(entry['recipient'])} by {entry['channel']} under " + "; ".join(basis),
            recorded=datetime.fromisoformat(entry["at"]),
        )
        resources.append(event)
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
