"""Information-sharing agreements (DESIGN §6.1): the model, its checks and the agreement layer.

An agreement applies to a request when it is ``active``, ``start <= at <= end`` (past ``end`` it
is expired whatever its status says), the request's holder is a party, some identifier of the
request's actor (or of its ``organization``, when a person receives through a portal) is another party, and the purpose is one of its purposes. Only the highest
version of each agreement id counts. An agreement with ``lapse_after_days`` lapses (stops
applying) once its review is that many days overdue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from consent._cache import IdentityCache
from consent.expiry import INFINITY, boundary_list, day_after, day_start, next_boundary
from consent.model import DATA_CATEGORIES, Identifier, Request


class Signatory(BaseModel):
    """Who signed an agreement for one party, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    party: Identifier
    name: str = Field(min_length=1)
    signed: date


class Document(BaseModel):
    """A document the agreement rests on (e.g. the DPIA), by reference and SHA-256 digest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Agreement(BaseModel):
    """One version of an information-sharing agreement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    status: Literal["draft", "active", "suspended", "expired"]
    parties: list[Identifier] = Field(min_length=2)
    purposes: list[str] = Field(min_length=1)
    categories: list[str] = Field(min_length=1)
    lawful_basis: list[str] = Field(min_length=1)
    start: date
    end: date | None = None
    review_date: date | None = None
    signatories: list[Signatory] = []
    retention: str | None = None
    documents: list[Document] = []
    lapse_after_days: int | None = Field(default=None, ge=0, le=3650)

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        unknown = sorted(set(self.categories) - DATA_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown data categories {unknown}; known: {sorted(DATA_CATEGORIES)}")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if len(set(self.parties)) != len(self.parties):
            raise ValueError("a party is listed twice")
        for signatory in self.signatories:
            if signatory.party not in self.parties:
                raise ValueError(f"signatory {signatory.name!r} signs for {signatory.party.system}|"
                                 f"{signatory.party.value}, which is not a party")
        return self

    @property
    def ref(self) -> str:
        """``id@version``, as decisions name agreements."""
        return f"{self.id}@{self.version}"

    @property
    def lapses_on(self) -> date | None:
        """The first day this agreement no longer applies because its review is overdue."""
        return lapse_day(self.review_date, self.lapse_after_days)


def lapse_day(review_date: date | None, lapse_after_days: int | None) -> date | None:
    """The day after ``review_date`` + ``lapse_after_days``, or None when it never lapses."""
    if review_date is None or lapse_after_days is None:
        return None
    return review_date + timedelta(days=lapse_after_days + 1)


def parse_agreement(document: Any) -> Agreement:
    """An :class:`Agreement` from its DESIGN §6.1 dict.

    Raises ``pydantic.ValidationError`` (a ``ValueError``) naming each faulty field, or
    ``ValueError`` when the document is not a mapping.
    """
    if isinstance(document, Agreement):
        return document
    if not isinstance(document, dict):
        raise ValueError(f"an agreement must be a mapping, got {type(document).__name__}")
    return Agreement.model_validate(document)


def current_versions(agreements: Iterable[Agreement]) -> list[Agreement]:
    """Only the highest version of each agreement id, in first-seen id order."""
    newest: dict[str, Agreement] = {}
    for agreement in agreements:
        held = newest.get(agreement.id)
        if held is None or agreement.version > held.version:
            newest[agreement.id] = agreement
    return list(newest.values())


@dataclass
class AgreementOutcome:
    """The agreement layer's answer for one request."""

    permit: bool
    reasons: list[str]
    agreements: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    redact_categories: list[str] = field(default_factory=list)
    until: float = INFINITY  # the next instant an agreement between these parties changes


@dataclass(frozen=True, slots=True)
class _Terms:
    """What evaluation reads of an agreement, as plain values (pydantic attribute access is slow)."""

    id: str
    ref: str
    status: str
    parties: frozenset[tuple[str, str]]
    purposes: tuple[str, ...]
    categories: frozenset[str]
    start: date
    end: date | None
    review_date: date | None
    lapses_on: date | None
    boundaries: tuple[float, ...]  # when it starts, expires, becomes due for review and lapses (midnights UTC)

    @classmethod
    def of(cls, agreement: Agreement) -> _Terms:
        changes = [day_start(agreement.start)]
        changes += [day_after(day) for day in (agreement.end, agreement.review_date) if day is not None]
        lapses_on = agreement.lapses_on
        changes += [day_start(lapses_on)] if lapses_on is not None else []
        return cls(
            agreement.id, agreement.ref, agreement.status, frozenset((p.system, p.value) for p in agreement.parties),
            tuple(agreement.purposes), frozenset(agreement.categories), agreement.start, agreement.end,
            agreement.review_date, lapses_on, boundary_list(changes),
        )


_terms = IdentityCache(_Terms.of)


def _why_not(terms: _Terms, purpose: str | None, today: date) -> str | None:
    """Why an agreement naming both parties does not apply (for ``purpose``, or for any
    purpose when None), or None when it does."""
    if terms.end is not None and today > terms.end:
        return f"expired on {terms.end}"
    if terms.status != "active":
        return f"status is {terms.status}"
    if terms.lapses_on is not None and today >= terms.lapses_on:
        return f"lapsed on {terms.lapses_on}: its review was due on {terms.review_date} and has not been renewed"
    if today < terms.start:
        return f"starts on {terms.start}"
    if purpose is not None and purpose not in terms.purposes:
        return f"purpose {purpose} is not among {', '.join(terms.purposes)}"
    return None


def evaluate_agreements(agreements: Sequence[Agreement], request: Request, today: date) -> AgreementOutcome:
    """The agreement layer (DESIGN §6.1) for a request on the UTC date ``today``.

    ``agreements`` should already be the current versions.
    """
    holder = request.holder
    if holder is None:
        return AgreementOutcome(False, ["holder required: agreements are evaluated for the organisation holding the data"])
    recipient = request.organization if request.organization is not None else request.actor
    reasons: list[str] = []
    applying: list[_Terms] = []
    until = INFINITY
    for agreement in agreements:
        terms = _terms(agreement)
        if holder not in terms.parties or not any(a != holder and a in terms.parties for a in recipient):
            continue
        until = min(until, next_boundary(terms.boundaries, request.at))
        problem = _why_not(terms, request.purpose, today)
        if problem:
            reasons.append(f"agreement {terms.ref} does not apply: {problem}")
        else:
            applying.append(terms)
    if not applying:
        reasons.append(f"no agreement applies between holder {holder[0]}|{holder[1]} and this recipient "
                       f"for purpose {request.purpose} → deny")
        return AgreementOutcome(False, reasons, until=until)

    covered = frozenset().union(*(t.categories for t in applying))
    refs = [t.ref for t in applying]
    flags = [f"review-overdue: {t.id}" for t in applying if t.review_date is not None and today > t.review_date]
    asked = request.data.categories if request.data is not None else None
    if asked:
        uncovered = sorted(asked - covered)
        if len(uncovered) == len(asked):
            reasons.append(f"agreement {', '.join(refs)} covers none of the requested categories "
                           f"{', '.join(sorted(asked))} → deny")
            return AgreementOutcome(False, reasons, refs, flags, until=until)
    else:
        # Any data: everything the agreements do not cover is withheld.
        uncovered = sorted(DATA_CATEGORIES - covered)
    reasons.append(f"agreement {', '.join(refs)} permits purpose {request.purpose}"
                   + (f" → redact {', '.join(uncovered)} (not covered)" if uncovered else ""))
    return AgreementOutcome(True, reasons, refs, flags, uncovered, until)


def in_force_between(
    agreements: Sequence[Agreement], holder: tuple[str, str] | None, recipient: Iterable[tuple[str, str]], today: date
) -> list[str]:
    """The refs of the agreements in force on ``today`` between ``holder`` (None: any party) and
    any of the ``recipient``'s identifiers, whatever their purposes (the same party, status, date
    and lapse rules as :func:`evaluate_agreements`). ``agreements`` should be the current versions."""
    keys = set(recipient) - {holder}
    refs = []
    for agreement in agreements:
        terms = _terms(agreement)
        named = holder is None or holder in terms.parties
        if named and not keys.isdisjoint(terms.parties) and _why_not(terms, None, today) is None:
            refs.append(terms.ref)
    return refs
