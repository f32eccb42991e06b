"""Completeness before sign-off: the referrals of a quarter that would be excluded from the
waiting-times return or counted wrongly, per organisation.

In scope are the referrals the quarter's return could count: received by its last day and
not started or closed before its first day. Each is checked for a referral source
(ServiceRequest.requester), a treatment start once the pathway is past the decision, the
substances (ServiceRequest.reasonCode in the substance code system), the person's CHI, and
a treatment start that is not before the referral.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import orjson

from gateway.reporting.quarters import Quarter
from gateway.reporting.records import Referral
from gateway.reporting.waits import missing_treatment_start, treatment_start

ISSUES = {
    "missing-referral-source": "no referral source (who referred)",
    "missing-treatment-start": "past the decision but no treatment start date",
    "missing-substance": "no substance recorded",
    "missing-chi": "the person has no CHI number",
    "treatment-before-referral": "treatment start is before the referral date",
}


def issues_of(referral: Referral) -> list[str]:
    """What is missing or wrong in one referral, as ISSUES codes."""
    found = []
    if not referral.has_source:
        found.append("missing-referral-source")
    if missing_treatment_start(referral):
        found.append("missing-treatment-start")
    if not referral.substances:
        found.append("missing-substance")
    if not referral.has_chi:
        found.append("missing-chi")
    started = treatment_start(referral)
    if started is not None and referral.received is not None and started < referral.received:
        found.append("treatment-before-referral")
    return found


def in_scope(referral: Referral, first: date, last: date) -> bool:
    """Whether the return for the quarter ``first``..``last`` could count the referral."""
    if referral.received is None or referral.received > last:
        return False
    started = treatment_start(referral)
    if started is not None:
        return started >= first
    return referral.closed_on is None or referral.closed_on >= first


@dataclass(frozen=True)
class RecordProblem:
    """One referral with problems: person-level, shown only to entitled console roles."""

    referral: str
    referral_id: str
    patient: str | None
    organisation: str
    issues: tuple[str, ...]


@dataclass
class OrganisationCompleteness:
    organisation: str
    records: int = 0
    complete: int = 0
    issues: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ISSUES, 0))

    @property
    def share_complete(self) -> float | None:
        return round(self.complete / self.records, 4) if self.records else None

    def csv_row(self, quarter: Quarter) -> dict[str, object]:
        share = self.share_complete
        return {"quarter": str(quarter), "organisation": self.organisation, "records": self.records, "complete": self.complete,
                "percent_complete": "" if share is None else f"{share * 100:.1f}", **{code.replace("-", "_"): n for code, n in self.issues.items()}}


@dataclass
class CompletenessReport:
    quarter: Quarter
    organisations: list[OrganisationCompleteness]
    problems: list[RecordProblem]

    @property
    def records(self) -> int:
        return sum(o.records for o in self.organisations)

    @property
    def complete(self) -> int:
        return sum(o.complete for o in self.organisations)

    def digest(self) -> str:
        """A fingerprint of what the report says: a sign-off names the report it was made on."""
        body = {"quarter": str(self.quarter), "organisations": [o.csv_row(self.quarter) for o in self.organisations],
                "problems": [(p.referral, p.issues) for p in self.problems]}
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def completeness_report(referrals: Iterable[Referral], quarter: Quarter) -> CompletenessReport:
    """Per organisation (the service owning the pathway), the records in scope and their problems."""
    organisations: dict[str, OrganisationCompleteness] = {}
    problems = []
    first, last = quarter.start, quarter.end
    for referral in referrals:
        if not in_scope(referral, first, last):
            continue
        row = organisations.setdefault(referral.service, OrganisationCompleteness(referral.service))
        row.records += 1
        found = issues_of(referral)
        if not found:
            row.complete += 1
            continue
        for code in found:
            row.issues[code] += 1
        problems.append(RecordProblem(referral.reference, referral.referral_id, referral.patient, referral.service, tuple(found)))
    ordered = sorted(organisations.values(), key=lambda o: o.organisation)
    return CompletenessReport(quarter, ordered, sorted(problems, key=lambda p: (p.organisation, p.referral_id)))


COMPLETENESS_COLUMNS = tuple(OrganisationCompleteness("").csv_row(Quarter(2000, 1)))
