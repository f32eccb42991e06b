"""Apply a decision to resources: keep what it permits, withhold what its obligations forbid.

A resource is withheld when its type, a security label (``meta.security``, with the SUD
hierarchy), a data category (``meta.tag`` or ``meta.security`` in the data-category system) or a
coding of one of its main code elements is named by a ``redact`` obligation. References left
pointing at withheld resources are then removed from the remaining ones: the list item holding
one goes; a single element holding one goes, or, when that element is required (a Condition's
``subject``, say), the resource goes too, and so on until nothing dangles. A deny or no-consent
decision withholds everything. The caller never learns what was withheld, only that something
was (an OperationOutcome warning).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from consent.model import DATA_CATEGORY_SYSTEM, canonical_label, labels_covered_by, relative_reference

CODE_ELEMENTS = ("code", "medicationCodeableConcept", "vaccineCode", "category", "type")

# R4 elements holding a required reference (1..1, or 1..* lists), by resource type.
REQUIRED_REFERENCES: dict[str, frozenset[str]] = {
    "AllergyIntolerance": frozenset({"patient"}),
    "CarePlan": frozenset({"subject"}),
    "Condition": frozenset({"subject"}),
    "EpisodeOfCare": frozenset({"patient"}),
    "Flag": frozenset({"subject"}),
    "Goal": frozenset({"subject"}),
    "Immunization": frozenset({"patient"}),
    "MedicationRequest": frozenset({"subject", "medicationReference"}),
    "MedicationStatement": frozenset({"subject", "medicationReference"}),
    "Procedure": frozenset({"subject"}),
    "Provenance": frozenset({"target"}),
    "RelatedPerson": frozenset({"patient"}),
    "ServiceRequest": frozenset({"subject"}),
}


@dataclass
class Redaction:
    """What may be disclosed: the kept resources (a list, or the Bundle given with its entries
    filtered), how many were withheld, and the warning to add when any were."""

    resources: list[dict[str, Any]] | dict[str, Any]
    withheld: int
    outcome: dict[str, Any] | None


def withheld_outcome() -> dict[str, Any]:
    """The OperationOutcome that says something was withheld, and nothing about what."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "suppressed", "diagnostics": "some information withheld"}],
    }


@dataclass(frozen=True)
class _Forbidden:
    security: frozenset[str]
    categories: frozenset[str]
    classes: frozenset[str]
    codes: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, decision: dict[str, Any]) -> _Forbidden:
        security: set[str] = set()
        categories: set[str] = set()
        classes: set[str] = set()
        codes: set[tuple[str, str]] = set()
        for obligation in decision.get("obligations") or []:
            rule = obligation.get("redact") or {}
            for label in rule.get("security") or []:
                security |= labels_covered_by(label)
            categories.update(rule.get("categories") or [])
            classes.update(rule.get("classes") or [])
            codes.update((c.get("system") or "", c.get("code")) for c in rule.get("codes") or [])
        return cls(frozenset(security), frozenset(categories), frozenset(classes), frozenset(codes))

    def __bool__(self) -> bool:
        return bool(self.security or self.categories or self.classes or self.codes)

    def forbids(self, resource: dict[str, Any]) -> bool:
        if resource.get("resourceType") in self.classes:
            return True
        meta = resource.get("meta") or {}
        for label in (meta.get("security") or []) + (meta.get("tag") or []):
            code = label.get("code")
            if label.get("system") == DATA_CATEGORY_SYSTEM:
                if code in self.categories:
                    return True
            elif isinstance(code, str) and canonical_label(code) in self.security:
                return True
        return bool(self.codes) and any((c.get("system") or "", c.get("code")) in self.codes for c in _codings(resource))


def _codings(resource: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for element in CODE_ELEMENTS:
        value = resource.get(element)
        for concept in value if isinstance(value, list) else [value]:
            if isinstance(concept, dict):
                yield from (c for c in concept.get("coding") or [] if isinstance(c, dict))


class _Drop:
    """Marker: the value holds a dangling reference and must go."""


class _Emptied:
    """Marker: a list lost all its items."""


_DROP, _EMPTIED = _Drop(), _Emptied()


def _strip(value: Any, removed: frozenset[str]) -> Any:
    """``value`` without dangling references; the same object when nothing changed."""
    if isinstance(value, list):
        kept, changed = [], False
        for item in value:
            new = _strip(item, removed)
            if new is _DROP:
                changed = True
                continue
            changed = changed or new is not item
            kept.append(new)
        return (kept or _EMPTIED) if changed else value
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and relative_reference(reference) in removed:
            return _DROP
        copy = None
        for key, item in value.items():
            new = _strip(item, removed)
            if new is item:
                continue
            if new is _DROP:
                return _DROP  # the nearest enclosing list item goes
            copy = copy if copy is not None else dict(value)
            if new is _EMPTIED:
                del copy[key]
            else:
                copy[key] = new
        return value if copy is None else copy
    return value


def _without_dangling(resource: dict[str, Any], removed: frozenset[str]) -> dict[str, Any] | None:
    """The resource with references to ``removed`` taken out; None when a required one dangles."""
    required = REQUIRED_REFERENCES.get(resource.get("resourceType", ""), frozenset())
    copy = None
    for key, value in resource.items():
        if key in ("resourceType", "id", "meta"):
            continue
        new = _strip(value, removed)
        if new is value:
            continue
        if (new is _DROP or new is _EMPTIED) and key in required:
            return None
        copy = copy if copy is not None else dict(resource)
        if new is _DROP or new is _EMPTIED:
            del copy[key]
        else:
            copy[key] = new
    return resource if copy is None else copy


def _names(resource: dict[str, Any], full_url: str | None) -> set[str]:
    names = {f"{resource.get('resourceType')}/{resource.get('id')}"}
    if full_url:
        names |= {full_url, relative_reference(full_url)}
    return names


def _filter(resources: list[tuple[dict[str, Any], str | None]], decision: dict[str, Any]) -> list[dict[str, Any] | None]:
    """Per input position: the resource to disclose (possibly pruned) or None when withheld."""
    if decision.get("decision") != "permit":
        return [None] * len(resources)
    forbidden = _Forbidden.of(decision)
    if not forbidden:
        return [r for r, _ in resources]
    removed: set[str] = set()
    gone = [forbidden.forbids(r) for r, _ in resources]
    for (resource, full_url), withheld in zip(resources, gone):
        if withheld:
            removed |= _names(resource, full_url)
    result: list[dict[str, Any] | None] = [None if g else r for (r, _), g in zip(resources, gone)]
    while removed:
        frozen = frozenset(removed)
        removed = set()
        for index, (resource, full_url) in enumerate(resources):
            if result[index] is None:
                continue
            result[index] = _without_dangling(resource, frozen)
            if result[index] is None:
                removed |= _names(resource, full_url)
        if removed:
            removed |= frozen
    return result


def redact(resources: list[dict[str, Any]] | dict[str, Any], decision: dict[str, Any]) -> Redaction:
    """What of ``resources`` (a list of resources, or a Bundle) the decision lets through.

    Inputs are not modified; pruned resources are copies.
    """
    if isinstance(resources, dict) and resources.get("resourceType") == "Bundle":
        entries = resources.get("entry") or []
        holding = [(i, e) for i, e in enumerate(entries) if isinstance(e.get("resource"), dict)]
        kept = _filter([(e["resource"], e.get("fullUrl")) for _, e in holding], decision)
        outcome_by_index = {i: k for (i, _), k in zip(holding, kept)}
        new_entries = []
        for index, entry in enumerate(entries):
            if index not in outcome_by_index:
                new_entries.append(entry)
            elif outcome_by_index[index] is not None:
                new_entries.append(entry if outcome_by_index[index] is entry["resource"] else {**entry, "resource": outcome_by_index[index]})
        withheld = len(entries) - len(new_entries)
        bundle = {**resources, "entry": new_entries}
        if not new_entries:
            del bundle["entry"]
        if "total" in resources:
            bundle["total"] = max(0, resources["total"] - withheld)
        return Redaction(bundle, withheld, withheld_outcome() if withheld else None)
    kept = _filter([(r, None) for r in resources], decision)
    disclosed = [r for r in kept if r is not None]
    withheld = len(resources) - len(disclosed)
    return Redaction(disclosed, withheld, withheld_outcome() if withheld else None)
