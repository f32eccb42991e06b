"""FHIR Consent provisions compiled once into plain Python and evaluated per request (DESIGN §6.2).

A provision *applies* when every condition it states matches the request. ``actor``,
``purpose`` and ``period`` are gates. ``class``, ``code`` and ``securityLabel`` are data
conditions: each one matches when some requested value of its kind matches, and *covers* the
request when every requested value of its kind matches. A condition whose kind the request
does not state (missing key, or no ``data`` at all) is unknown.

- A deny whose data conditions all cover the request decides ``deny``. Otherwise (some
  condition only matches part, or is unknown) it is a *partial deny*: a ``redact`` obligation
  for everything it names. A deny with a ``securityLabel`` condition is always partial: the
  request's labels say what is present, and an item may carry none of them (as in LEAP).
- Every data-scoped deny that applies, partial or not, is also reported as a
  :class:`ScopedDeny`: its redaction holds whatever other answers permit, unless a stronger
  permit names the same data (see ``consent.decide``).
- A permit applies only when all its data conditions are known and match; what they do not
  cover is *narrowed* (redacted) from the permit.
- The innermost applicable provision gives the answer; among applicable siblings the stronger
  one by :func:`rank`. A full permit nested inside a data-scoped deny lifts that deny.

Security labels use the DESIGN §3 hierarchy: ``ETH`` is ``SUD``; ``ETHUD`` and ``OPIOIDUD``
fall under ``SUD``. Confidentiality labels (N, R, V) can be matched by name but never count
as a part of the data. A provision actor's ``role`` is not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from consent.expiry import day_start
from consent.model import (
    DATA_CATEGORY_SYSTEM,
    REFERENCE_SYSTEM,
    Data,
    Request,
    identifier_key,
    labels_covered_by,
    canonical_label,
    relative_reference,
)

PERMIT, DENY = "permit", "deny"

# Condition outcomes, weakest first.
NO, UNKNOWN, PART, FULL = 0, 1, 2, 3

DataScope = frozenset[tuple[str, Any]]  # {("security", "PSY"), ("codes", (system, code)), ...}
EMPTY: DataScope = frozenset()


class ConsentFormatError(ValueError):
    """A Consent that cannot be evaluated; the message names the element."""


def rank(kind: str, specific: bool) -> int:
    """Strength of an answer: specific deny 4 > specific permit 3 > default deny 2 > default permit 1."""
    return (3 if specific else 1) + (kind == DENY)


# --- dates -----------------------------------------------------------------------------


def _bounds(text: Any, where: str) -> tuple[float, float]:
    """[first instant, first instant after) of a FHIR dateTime of any precision, UTC when no zone."""
    if not isinstance(text, str):
        raise ConsentFormatError(f"{where} must be a FHIR dateTime string")
    try:
        if len(text) == 4:
            year = int(text)
            first, after = date(year, 1, 1), date(year + 1, 1, 1)
        elif len(text) == 7:
            year, month = int(text[:4]), int(text[5:7])
            first = date(year, month, 1)
            after = date(year + month // 12, month % 12 + 1, 1)
        elif len(text) == 10:
            first = date.fromisoformat(text)
            after = date.fromordinal(first.toordinal() + 1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            # Both ends as a parsed request 'at' would be, so an 'at' at the end is outside.
            return moment.timestamp(), (moment + timedelta(microseconds=1)).timestamp()
    except ValueError as error:
        raise ConsentFormatError(f"{where} {text!r} is not a FHIR date or dateTime") from error
    return day_start(first), day_start(after)


def compile_period(period: Any, where: str) -> tuple[float, float] | None:
    """``(start, end_exclusive)`` epoch seconds; a date-only end covers that whole day."""
    if period is None:
        return None
    if not isinstance(period, dict):
        raise ConsentFormatError(f"{where} must be a Period")
    start = _bounds(period["start"], f"{where}.start")[0] if "start" in period else float("-inf")
    end = _bounds(period["end"], f"{where}.end")[1] if "end" in period else float("inf")
    return start, end


def _period_text(period: dict[str, Any]) -> str:
    return f"{period.get('start', '')}..{period.get('end', '')}"


# --- data conditions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassCondition:
    classes: frozenset[str]

    def assess(self, data: Data) -> tuple[int, DataScope]:
        asked = data.classes
        if asked is None:
            return UNKNOWN, EMPTY
        if not asked & self.classes:
            return NO, EMPTY
        rest = asked - self.classes
        return (FULL, EMPTY) if not rest else (PART, frozenset(("classes", c) for c in rest))


@dataclass(frozen=True, slots=True)
class CodeCondition:
    """Data categories (in the data-category system) or clinical codes; any one matching suffices."""

    categories: frozenset[str]
    codes: frozenset[tuple[str, str]]

    def assess(self, data: Data) -> tuple[int, DataScope]:
        stated: list[tuple[str, frozenset[Any], frozenset[Any]]] = []
        if self.categories and data.categories is not None:
            stated.append(("categories", data.categories, self.categories))
        if self.codes and data.codes is not None:
            stated.append(("codes", data.codes, self.codes))
        if not stated:
            return UNKNOWN, EMPTY
        if not any(asked & named for _, asked, named in stated):
            return NO, EMPTY
        if any(asked and asked <= named for _, asked, named in stated):
            return FULL, EMPTY
        return PART, frozenset((kind, v) for kind, asked, named in stated for v in asked - named)


@dataclass(frozen=True, slots=True)
class LabelCondition:
    labels: frozenset[str]  # as named plus everything under them in the hierarchy

    def assess(self, data: Data) -> tuple[int, DataScope]:
        if data.sensitivity is None:
            return UNKNOWN, EMPTY
        if not (self.labels & data.sensitivity or self.labels & data.confidentiality):
            return NO, EMPTY
        parts = data.sensitivity or data.confidentiality
        rest = parts - self.labels
        return (FULL, EMPTY) if not rest else (PART, frozenset(("security", s) for s in rest))


DataCondition = ClassCondition | CodeCondition | LabelCondition


# --- compiled provisions ------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """A whole-request answer from a provision (or several tied ones)."""

    kind: str
    rank: int
    reasons: tuple[str, ...]  # "Consent/c1 provision[0] (permit, actor rehab-tayview-house) → permit"
    narrowed: DataScope  # what a data-scoped permit does not cover
    names: DataScope  # what a permit (or a permit enclosing it) names, labels with those under them; read for permits only


@dataclass(slots=True)
class ScopedDeny:
    """A data-scoped deny that applies: redact what it names."""

    rank: int
    scope: DataScope
    consent: str  # "Consent/c1"
    reason: str  # "Consent/c1 provision[0].provision[1] (deny, securityLabel PSY) → redact PSY"


def stronger(held: Answer | None, new: Answer) -> Answer:
    """The stronger of two answers; equal ones merge (a tie of permits narrows to what both leave out
    and names what either names)."""
    if held is None or new.rank > held.rank:
        return new
    if new.rank < held.rank:
        return held
    return Answer(held.kind, held.rank, held.reasons + new.reasons, held.narrowed & new.narrowed, held.names | new.names)


def describe(scope: DataScope) -> str:
    """``PSY, mental-health, http://snomed.info/sct|123`` for a reason text."""
    return ", ".join(sorted(f"{v[0]}|{v[1]}" if kind == "codes" else v for kind, v in scope))


def names_of(scope: DataScope) -> DataScope:
    """The data a provision naming ``scope`` speaks for: its labels widened to those under them."""
    return frozenset(
        ("security", label) for kind, value in scope if kind == "security" for label in labels_covered_by(value)
    ) | scope


@dataclass(slots=True)
class Provision:
    kind: str
    consent: str  # "Consent/c1"
    source: str  # "Consent/c1 provision[0] (permit, actor rehab-tayview-house)", for reasons
    specific: bool  # states an actor or a purpose
    actors: frozenset[tuple[str, str]] | None
    purposes: frozenset[str] | None
    period: tuple[float, float] | None
    conditions: tuple[DataCondition, ...]
    scope: DataScope  # what this provision names, as a redact obligation
    children: tuple[Provision, ...]

    # Built once and shared (answers are never changed): the whole answer without narrowing,
    # by inherited specificity, and the reason text when this is a data-scoped deny.
    plain_answers: tuple[Answer, ...] = field(init=False)
    redact_reason: str = field(init=False)
    covers_all_possible: bool = field(init=False)  # False for a securityLabel deny: never covers all the data
    scoped_deny: bool = field(init=False)  # a deny with data conditions

    def __post_init__(self) -> None:
        reasons = (f"{self.source} → {self.kind}",)
        names = names_of(self.scope) if self.kind == PERMIT else EMPTY
        self.plain_answers = tuple(
            Answer(self.kind, rank(self.kind, inherited or self.specific), reasons, EMPTY, names) for inherited in (False, True)
        )
        self.redact_reason = f"{self.source} → redact {describe(self.scope)}"
        self.covers_all_possible = not (self.kind == DENY and any(isinstance(c, LabelCondition) for c in self.conditions))
        self.scoped_deny = self.kind == DENY and bool(self.conditions)

    def period_bounds(self) -> Iterator[float]:
        """The start and end of this provision's period and of every nested one (infinite ones too)."""
        if self.period is not None:
            yield from self.period
        for child in self.children:
            yield from child.period_bounds()

    def coverage(self, data: Data | None) -> tuple[int, DataScope]:
        """How this provision's data conditions meet the requested data: NO, PART or FULL."""
        if data is None:
            return (PART, EMPTY) if self.kind == DENY else (NO, EMPTY)
        weakest, rest = FULL, EMPTY
        for condition in self.conditions:
            outcome, unmatched = condition.assess(data)
            if outcome == NO or (outcome == UNKNOWN and self.kind == PERMIT):
                return NO, EMPTY
            weakest = min(weakest, outcome)
            rest |= unmatched
        return (FULL, EMPTY) if weakest == FULL and self.covers_all_possible else (PART, rest)

    def evaluate(self, request: Request, withheld: list[ScopedDeny], inherited_specific: bool = False) -> Answer | None | bool:
        """This provision's whole-request answer (None for a partial deny), or False when it does not apply.

        Data-scoped denies that apply and that no nested full permit lifts are appended to ``withheld``.
        """
        # Gates inline: this is the innermost loop of every decision.
        if self.actors is not None and self.actors.isdisjoint(request.actor):
            return False
        if self.purposes is not None and request.purpose not in self.purposes:
            return False
        if self.period is not None and not (self.period[0] <= request.at < self.period[1]):
            return False
        if self.conditions:
            coverage, rest = self.coverage(request.data)
            if coverage == NO:
                return False
        else:
            coverage, rest = FULL, EMPTY
        specific = inherited_specific or self.specific
        partial_deny = coverage == PART and self.kind == DENY
        own: Answer | None = None
        if not partial_deny:
            own = self.plain_answers[inherited_specific]
            if rest:
                own = Answer(own.kind, own.rank, own.reasons, rest, own.names)
        inner: Answer | None = None
        lifted = False
        for child in self.children:
            if child.actors is not None and child.actors.isdisjoint(request.actor):
                continue  # the commonest miss, checked before paying for the call
            answer = child.evaluate(request, withheld, specific)
            if answer is None or answer is False:
                continue
            if self.scoped_deny:
                lifted = lifted or (answer.kind == PERMIT and not answer.narrowed)
            if not partial_deny:
                inner = stronger(inner, answer)
        if self.scoped_deny and not lifted:
            withheld.append(ScopedDeny(rank(DENY, specific), self.scope, self.consent, self.redact_reason))
        if partial_deny:
            return None
        assert own is not None
        if inner is None:
            return own
        if not (own.narrowed or own.names):
            return inner
        # The inner answer holds within this provision: its narrowing stays, and what it names is named.
        return Answer(inner.kind, inner.rank, inner.reasons, inner.narrowed | own.narrowed, inner.names | own.names)


def _codings(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise ConsentFormatError(f"{where} must be a list")
    return value


def _actor_keys(actor: dict[str, Any], contained: dict[str, dict[str, Any]], where: str) -> set[tuple[str, str]]:
    reference = actor.get("reference")
    if not isinstance(reference, dict):
        raise ConsentFormatError(f"{where}.reference must be a Reference")
    keys: set[tuple[str, str]] = set()
    logical = identifier_key(reference.get("identifier"))
    if logical is not None:
        keys.add(logical)
    literal = reference.get("reference")
    if isinstance(literal, str) and literal.startswith("#"):
        resource = contained.get(literal[1:])
        if resource is None:
            raise ConsentFormatError(f"{where}.reference {literal} names no contained resource")
        keys |= {k for k in map(identifier_key, resource.get("identifier") or []) if k is not None}
    elif isinstance(literal, str):
        keys.add((REFERENCE_SYSTEM, relative_reference(literal)))
    return keys


def _actor_label(actor: dict[str, Any]) -> str:
    reference = actor["reference"]
    identifier = reference.get("identifier") or {}
    return identifier.get("value") or reference.get("reference") or reference.get("display") or "?"


def compile_provision(provision: Any, consent_ref: str, path: str, contained: dict[str, dict[str, Any]]) -> Provision:
    """One provision of the Consent ``consent_ref`` and its nested provisions, ready to evaluate."""
    if not isinstance(provision, dict):
        raise ConsentFormatError(f"{path} must be an object")
    kind = provision.get("type")
    if kind not in (PERMIT, DENY):
        raise ConsentFormatError(f"{path}.type must be permit or deny, got {kind!r}")
    described = [kind]
    scope: set[tuple[str, Any]] = set()

    actors = None
    actor_list = _codings(provision.get("actor"), f"{path}.actor")
    if actor_list:
        actors = frozenset().union(*(_actor_keys(a, contained, f"{path}.actor[{i}]") for i, a in enumerate(actor_list)))
        described.append("actor " + ", ".join(_actor_label(a) for a in actor_list))
    purposes = None
    purpose_list = _codings(provision.get("purpose"), f"{path}.purpose")
    if purpose_list:
        purposes = frozenset(c["code"] for c in purpose_list if isinstance(c.get("code"), str))
        described.append("purpose " + ", ".join(sorted(purposes)))
    period = compile_period(provision.get("period"), f"{path}.period")
    if period is not None:
        described.append(f"period {_period_text(provision['period'])}")

    conditions: list[DataCondition] = []
    class_list = _codings(provision.get("class"), f"{path}.class")
    if class_list:
        classes = frozenset(c["code"] for c in class_list if isinstance(c.get("code"), str))
        conditions.append(ClassCondition(classes))
        scope |= {("classes", c) for c in classes}
        described.append("class " + ", ".join(sorted(classes)))
    code_list = _codings(provision.get("code"), f"{path}.code")
    if code_list:
        codings = [c for concept in code_list for c in concept.get("coding") or [] if isinstance(c.get("code"), str)]
        categories = frozenset(c["code"] for c in codings if c.get("system") == DATA_CATEGORY_SYSTEM)
        codes = frozenset((c.get("system") or "", c["code"]) for c in codings if c.get("system") != DATA_CATEGORY_SYSTEM)
        conditions.append(CodeCondition(categories, codes))
        scope |= {("categories", c) for c in categories} | {("codes", c) for c in codes}
        described.append("code " + ", ".join(sorted(categories) + sorted(f"{s}|{c}" for s, c in codes)))
    label_list = _codings(provision.get("securityLabel"), f"{path}.securityLabel")
    if label_list:
        named = sorted({canonical_label(c["code"]) for c in label_list if isinstance(c.get("code"), str)})
        conditions.append(LabelCondition(frozenset().union(*(labels_covered_by(n) for n in named))))
        scope |= {("security", n) for n in named}
        described.append("securityLabel " + ", ".join(named))

    nested = _codings(provision.get("provision"), f"{path}.provision")
    prefix = "" if path == "provision" else f"{path}."
    children = tuple(compile_provision(p, consent_ref, f"{prefix}provision[{i}]", contained) for i, p in enumerate(nested))
    return Provision(
        kind=kind,
        consent=consent_ref,
        source=f"{consent_ref} {path} ({', '.join(described)})",
        specific=actors is not None or purposes is not None,
        actors=actors,
        purposes=purposes,
        period=period,
        conditions=tuple(conditions),
        scope=frozenset(scope),
        children=children,
    )
