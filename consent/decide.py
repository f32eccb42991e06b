"""The disclosure decision: agreements (DESIGN §6.1) AND the person's consents (§6.2).

Across the consents that count, the strongest whole-request answer wins: specific deny >
specific permit > default deny > default permit. A winning permit redacts what the winning
permits all leave out and what every data-scoped deny that applies names, in any consent,
outranked or not; an outranked one is lifted only for the data a winning permit names itself.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from consent._cache import IdentityCache
from consent.agreements import Agreement, current_versions, evaluate_agreements, in_force_between, parse_agreement
from consent.consents import compiled
from consent.model import Request, RequestError, identifier_key, parse_instant, parse_request
from consent.expiry import INFINITY, iso_instant
from consent.provisions import DENY, EMPTY, Answer, DataScope, ScopedDeny, describe, stronger

PERMIT_DECISION, DENY_DECISION, NO_CONSENT = "permit", "deny", "no-consent"
_DIMENSIONS = ("security", "categories", "codes", "classes")


@dataclass
class ConsentOutcome:
    """The consent layer's answer."""

    decision: str
    reasons: list[str]
    consents: list[str] = field(default_factory=list)
    redaction: DataScope = EMPTY
    until: float = INFINITY  # the next instant the answer could change


def consent_layer(request: Request, consents: Sequence[dict[str, Any]]) -> ConsentOutcome:
    """Evaluate the person's Consents for a normalised request."""
    reasons: list[str] = []
    answers: list[tuple[str, Answer]] = []
    withheld: list[ScopedDeny] = []
    counted = top = 0
    until = INFINITY
    for consent in consents:
        compiled_consent = compiled(consent)
        if not compiled_consent.active or compiled_consent.patient.isdisjoint(request.patient):
            continue
        boundaries = compiled_consent.boundaries
        if boundaries and boundaries[-1] > request.at:  # next_boundary inline: this loop is every decision's
            changes = boundaries[bisect_right(boundaries, request.at)]
            if changes < until:
                until = changes
        period = compiled_consent.period
        if period is not None and not (period[0] <= request.at < period[1]):
            continue  # expired or not yet started
        counted += 1
        ref = compiled_consent.ref
        if compiled_consent.error is not None:
            reason = f"{ref} cannot be evaluated: {compiled_consent.error} → deny"
            return ConsentOutcome(DENY_DECISION, [reason], [ref], until=until)
        answer = compiled_consent.root.evaluate(request, withheld) if compiled_consent.root is not None else False
        if answer is False:
            reasons.append(compiled_consent.not_applicable)
        elif answer is not None:
            answers.append((ref, answer))
            top = max(top, answer.rank)

    if not answers:
        reasons += [w.reason for w in withheld]
        reasons.append("no consent of this person applies to this request → no-consent" if counted
                       else "no active consent of this person is in force → no-consent")
        return ConsentOutcome(NO_CONSENT, reasons, until=until)

    winner: Answer | None = None
    used: list[str] = []
    for ref, answer in answers:
        if answer.rank == top:
            winner = stronger(winner, answer)
            used.append(ref)
            reasons += answer.reasons
        else:
            reasons += [f"{reason}, outranked" for reason in answer.reasons]
    assert winner is not None
    if winner.kind == DENY:
        return ConsentOutcome(DENY_DECISION, reasons, _unique(used), until=until)

    redaction = winner.narrowed
    if redaction:
        reasons.append(f"the permit covers only part of the request → redact {describe(redaction)}")
    for deny in withheld:
        if deny.rank >= top:
            kept = deny.scope
            reasons.append(deny.reason)
        else:
            # Outranked, it still holds, except for the data the stronger permit names itself.
            kept = deny.scope - winner.names
            reasons.append(_outranked_reason(deny, kept))
        if kept:
            redaction |= kept
            used.append(deny.consent)
    return ConsentOutcome(PERMIT_DECISION, reasons, _unique(used), redaction, until)


def _outranked_reason(deny: ScopedDeny, kept: DataScope) -> str:
    if kept == deny.scope:
        return f"{deny.reason}, holds whatever other consents permit"
    if kept:
        return f"{deny.reason}, lifted for {describe(deny.scope - kept)} by a stronger permit naming it; {describe(kept)} stays redacted"
    return f"{deny.reason}, lifted by a stronger permit naming that data"


def _unique(refs: list[str]) -> list[str]:
    return list(dict.fromkeys(refs))


def _parse_or_error(document: Any) -> Agreement | str:
    try:
        return parse_agreement(document)
    except ValueError as error:
        name = document.get("id", "?") if isinstance(document, dict) else "?"
        return f"agreement {name} cannot be read and is ignored: {error}".replace("\n", " ")


_agreement = IdentityCache(_parse_or_error)
_current_sets: dict[tuple[int, ...], tuple[tuple[Any, ...], list[Agreement], list[str]]] = {}


def _agreements(documents: Sequence[dict[str, Any] | Agreement]) -> tuple[list[Agreement], list[str]]:
    """The current versions among ``documents`` and the reasons any were unreadable; remembered
    per set of document objects (held, so their ids stay theirs)."""
    key = tuple(map(id, documents))
    held = _current_sets.get(key)
    if held is not None:
        return held[1], held[2]
    parsed = [d if isinstance(d, Agreement) else _agreement(d) for d in documents]
    problems = [p for p in parsed if isinstance(p, str)]
    current = current_versions(p for p in parsed if isinstance(p, Agreement))
    if len(_current_sets) >= 1024:
        del _current_sets[next(iter(_current_sets))]
    _current_sets[key] = (tuple(documents), current, problems)
    return current, problems


def obligations(redaction: DataScope) -> list[dict[str, Any]]:
    """The DESIGN §6.4 obligations list for a redaction set (empty when nothing is redacted)."""
    if not redaction:
        return []
    grouped: dict[str, list[Any]] = {kind: [] for kind in _DIMENSIONS}
    for kind, value in redaction:
        grouped[kind].append(value)
    for values in grouped.values():
        values.sort()
    grouped["codes"] = [{"system": system, "code": code} for system, code in grouped["codes"]]
    return [{"redact": grouped}]


def _decision(
    decision: str,
    reasons: list[str],
    agreements: list[str] | None = None,
    consents: list[str] | None = None,
    flags: list[str] | None = None,
    redaction: DataScope = EMPTY,
    until: float = INFINITY,
) -> dict[str, Any]:
    return {
        "decision": decision,
        "reasons": reasons,
        "agreements": agreements or [],
        "consents": consents or [],
        "flags": flags or [],
        "obligations": obligations(redaction) if decision == PERMIT_DECISION else [],
        "until": iso_instant(until),
    }


def decide(
    request: dict[str, Any],
    consents: Sequence[dict[str, Any]],
    agreements: Sequence[dict[str, Any] | Agreement] | None = None,
) -> dict[str, Any]:
    """The decision for a DESIGN §8 request over the person's Consents and, when given, the agreements.

    With ``agreements`` None only the consent layer is evaluated. Both layers must permit;
    their redact obligations merge. ``"until"`` is the next instant after ``at`` at which a
    period or agreement date read here could change the answer (ISO 8601 UTC), or None. Never
    raises for a bad request: it is refused with a reason (and ``until`` None).
    """
    try:
        parsed = parse_request(request)
    except RequestError as error:
        return _decision(DENY_DECISION, [str(error)])
    reasons: list[str] = []
    flags: list[str] = []
    agreement_refs: list[str] = []
    redaction: DataScope = EMPTY
    until = INFINITY
    if agreements is not None:
        current, problems = _agreements(agreements)
        today = datetime.fromtimestamp(parsed.at, timezone.utc).date()
        layer = evaluate_agreements(current, parsed, today)
        reasons += problems
        reasons += layer.reasons
        flags, agreement_refs = layer.flags, layer.agreements
        if not layer.permit:
            return _decision(DENY_DECISION, reasons, agreement_refs, flags=flags, until=layer.until)
        redaction = frozenset(("categories", c) for c in layer.redact_categories)
        until = layer.until
    outcome = consent_layer(parsed, consents)
    reasons += outcome.reasons
    return _decision(
        outcome.decision, reasons, agreement_refs, outcome.consents, flags, redaction | outcome.redaction, min(until, outcome.until)
    )


def agreements_in_force(
    agreements: Sequence[dict[str, Any] | Agreement], holder: dict[str, str] | None, recipient: Sequence[dict[str, str]], at: str
) -> list[str]:
    """The agreements (``id@version``) in force at ``at`` (ISO 8601) between the ``holder`` (or,
    when None, any party) and the ``recipient`` organisation (its identifiers), for any purpose;
    unreadable ones never count."""
    holder_key = identifier_key(holder) if holder is not None else None
    if holder is not None and holder_key is None:
        return []
    current, _ = _agreements(agreements)
    today = datetime.fromtimestamp(parse_instant(at), timezone.utc).date()
    return in_force_between(current, holder_key, [k for k in map(identifier_key, recipient) if k is not None], today)


def decide_many(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Decisions for ``[{"consents": [...], "agreements": [...] (optional), "request": {...}}]``, in order."""
    decisions = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            decisions.append(_decision(DENY_DECISION, [f"item {index} needs a 'request' object"]))
            continue
        consents = item.get("consents") or []
        agreements = item.get("agreements")
        if not isinstance(consents, list) or not (agreements is None or isinstance(agreements, list)):
            decisions.append(_decision(DENY_DECISION, [f"item {index}: 'consents' and 'agreements' must be lists"]))
            continue
        decisions.append(decide(item["request"], [c for c in consents if isinstance(c, dict)], agreements))
    return decisions
