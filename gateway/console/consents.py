"""Recording a person's consent from the console: the form's choices and the FHIR Consent.

The form records the partnership's usual opt-in shape: nothing is shared by
default (root ``deny`` over the consent period); each chosen recipient gets a
nested ``permit`` for the chosen purposes and data categories; exclusions are a
``deny`` nested inside each permit, so the person can say "share my recovery
progress, but never my mental health". Writes go through the FHIR service, so
labels, the consent lifecycle and audit all apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.console.people import RECORDER_EXTENSION, WITNESS_EXTENSION
from gateway.store.repository import Stored, fhir_instant, now_utc

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PATHWAY_PURPOSE = "https://pathway.scot/CodeSystem/purpose"
DATA_CATEGORY = "https://pathway.scot/CodeSystem/data-category"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
PURPOSES: dict[str, tuple[str, str]] = {
    "TREAT": (ACT_REASON, "Care and treatment"),
    "CAREMGT": (ACT_REASON, "Care coordination (referral, reviews)"),
    "HOPERAT": (ACT_REASON, "Service operations"),
    "PUBHLTH": (ACT_REASON, "Statistics"),
    "carer-support": (PATHWAY_PURPOSE, "Carer support"),
}
CATEGORIES: dict[str, str] = {
    "demographics": "Demographics",
    "contact-details": "Contact details",
    "substance-use": "Substance use",
    "prescribing": "Prescribing",
    "physical-health": "Physical health",
    "mental-health": "Mental health",
    "sexual-health": "Sexual health",
    "domestic-abuse": "Domestic abuse",
    "justice": "Justice",
    "social-care": "Social care",
    "child-protection": "Child protection",
    "pathway-progress": "Pathway progress (stage, dates, attendance)",
    "reviews": "Reviews (Outcome Star and notes)",
    "carer-details": "Carer details",
}
_RECIPIENT = re.compile(r"^(Organization|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")
_WITNESS = re.compile(r"^PractitionerRole/[A-Za-z0-9\-.]{1,64}$")


@dataclass
class ConsentChoices:
    """What the person chose, as the form collects it."""

    recipients: list[str] = field(default_factory=list)  # "Organization/{id}" | "RelatedPerson/{id}"
    purposes: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # none chosen: every category
    exclusions: list[str] = field(default_factory=list)
    start: str = ""
    end: str = ""
    witness: str = ""  # "PractitionerRole/{id}" or empty

    @classmethod
    def from_form(cls, form: dict[str, list[str]]) -> "ConsentChoices":
        def first(key: str) -> str:
            return (form.get(key) or [""])[0].strip()

        return cls(
            recipients=form.get("recipient", []),
            purposes=form.get("purpose", []),
            categories=form.get("category", []),
            exclusions=form.get("exclude", []),
            start=first("start"),
            end=first("end"),
            witness=first("witness"),
        )

    def problems(self, known_recipients: set[str]) -> list[str]:
        """Everything wrong with the choices, each as a sentence the officer can act on."""
        found = []
        if not self.recipients:
            found.append("Choose at least one recipient.")
        found += [f"{r} is not a recipient the person can choose." for r in self.recipients if not _RECIPIENT.match(r) or r not in known_recipients]
        if not self.purposes:
            found.append("Choose at least one purpose.")
        found += [f"{p} is not a purpose of use." for p in self.purposes if p not in PURPOSES]
        found += [f"{c} is not a data category." for c in [*self.categories, *self.exclusions] if c not in CATEGORIES]
        found += [f"{c} is both shared and excluded; choose one." for c in set(self.categories) & set(self.exclusions)]
        starts, ends = _date(self.start), _date(self.end)
        if starts is None:
            found.append("Give the date the consent starts (YYYY-MM-DD).")
        if self.end and ends is None:
            found.append("The end date must be a date (YYYY-MM-DD), or left empty.")
        if starts and ends and ends < starts:
            found.append("The consent cannot end before it starts.")
        if self.witness and not _WITNESS.match(self.witness):
            found.append("The witness must be chosen from the directory.")
        return found


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def build_consent(
    patient: Stored,
    choices: ConsentChoices,
    *,
    actors: dict[str, dict[str, Any]],
    witness: dict[str, Any] | None,
    recorder: str,
    organization: dict[str, Any] | None,
    existing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Consent for these choices (a new one, or the next version of ``existing``).

    ``actors`` maps each chosen recipient to the reference the provision names it by
    (reference, identifier and display)."""
    chi = next((dict(i) for i in patient.resource.get("identifier", []) if "chi-number" in i.get("system", "")), None)
    period = {"start": choices.start} | ({"end": choices.end} if choices.end else {})
    permits = []
    for recipient in choices.recipients:
        permit: dict[str, Any] = {
            "type": "permit",
            "actor": [{"role": {"coding": [_coding(PARTICIPATION, "IRCP")]}, "reference": actors[recipient]}],
            "purpose": [_coding(PURPOSES[p][0], p) for p in choices.purposes],
        }
        if choices.categories:
            permit["code"] = [{"coding": [_coding(DATA_CATEGORY, c)]} for c in choices.categories]
        if choices.exclusions:
            permit["provision"] = [{"type": "deny", "code": [{"coding": [_coding(DATA_CATEGORY, c)]} for c in choices.exclusions]}]
        permits.append(permit)
    consent: dict[str, Any] = dict(existing or {})
    consent.update(
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
            "patient": {"reference": patient.reference} | ({"identifier": chi} if chi else {}),
            "dateTime": fhir_instant(now_utc()),
            "performer": [{"reference": patient.reference}],
            "policyRule": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN")]},
            "provision": {"type": "deny", "period": period, "provision": permits},
            "extension": [
                *[e for e in consent.get("extension", []) if e.get("url") != RECORDER_EXTENSION],
                {"url": RECORDER_EXTENSION, "valueReference": {"display": recorder}},
            ],
        }
    )
    consent.pop("meta", None)
    if organization:
        consent["organization"] = [organization]
    consent.pop("verification", None)
    if witness:
        consent["verification"] = [
            {
                "extension": [{"url": WITNESS_EXTENSION, "valueReference": witness}],
                "verified": True,
                "verifiedWith": {"reference": patient.reference},
                "verificationDate": fhir_instant(now_utc()),
            }
        ]
    return consent


def choices_of(consent: dict[str, Any]) -> ConsentChoices | None:
    """The form's choices for a Consent the form could have written, else None
    (its structure is richer than the form; record a new consent instead)."""
    root = consent.get("provision") or {}
    permits = root.get("provision") or []
    if root.get("type") != "deny" or not permits or any(p.get("type") != "permit" or len(p.get("actor", [])) != 1 for p in permits):
        return None
    shapes = {(_codes(p, "purpose"), _categories(p), _categories((p.get("provision") or [{}])[0])) for p in permits}
    if len(shapes) != 1 or any(len(p.get("provision") or []) > 1 for p in permits):
        return None
    purposes, categories, exclusions = shapes.pop()
    witness = ""
    for verification in consent.get("verification", []):
        for extension in verification.get("extension", []):
            if extension.get("url") == WITNESS_EXTENSION:
                witness = (extension.get("valueReference") or {}).get("reference", "")
    return ConsentChoices(
        recipients=[p["actor"][0]["reference"].get("reference", "") for p in permits],
        purposes=list(purposes),
        categories=list(categories),
        exclusions=list(exclusions),
        start=(root.get("period") or {}).get("start", ""),
        end=(root.get("period") or {}).get("end", ""),
        witness=witness,
    )


def _codes(provision: dict[str, Any], element: str) -> tuple[str, ...]:
    return tuple(sorted(c.get("code", "") for c in provision.get(element, [])))


def _categories(provision: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(c.get("code", "") for concept in provision.get("code", []) for c in concept.get("coding", []) if c.get("system") == DATA_CATEGORY))


def describe(provision: dict[str, Any]) -> dict[str, Any]:
    """A provision tree as plain words for the person's page (conditions, then nested)."""
    conditions = []
    actors = [(a.get("reference") or {}) for a in provision.get("actor", [])]
    if actors:
        conditions.append("to " + ", ".join(a.get("display") or a.get("reference") or (a.get("identifier") or {}).get("value", "?") for a in actors))
    if provision.get("purpose"):
        conditions.append("for " + ", ".join(c.get("code", "") for c in provision["purpose"]))
    codes = [c.get("code", "") for concept in provision.get("code", []) for c in concept.get("coding", [])]
    if codes:
        conditions.append("covering " + ", ".join(codes))
    if provision.get("securityLabel"):
        conditions.append("labelled " + ", ".join(s.get("code", "") for s in provision["securityLabel"]))
    if provision.get("class"):
        conditions.append("of type " + ", ".join(c.get("code", "") for c in provision["class"]))
    period = provision.get("period") or {}
    if period:
        conditions.append(f"from {period.get('start', '…')} to {period.get('end', 'no end date')}")
    return {
        "type": provision.get("type", "?"),
        "conditions": conditions or ["by default"],
        "nested": [describe(p) for p in provision.get("provision", [])],
    }
