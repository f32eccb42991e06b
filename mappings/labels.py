"""Labelling: the data categories and security labels every resource carries.

The rules are data (``labels.yaml`` beside this module). Ingest and the
gateway (for resources partners create) both call :func:`label_resource`, so
a resource is labelled the same way whichever way it arrived. Labelling only
adds: labels a resource already carries are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = Path(__file__).with_name("labels.yaml")
CATEGORY_SYSTEM = "https://pathway.scot/CodeSystem/data-category"
SENSITIVITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONFIDENTIALITY_CODES = ("N", "R", "V")
SOURCE_PREFIX = "https://pathway.scot/source/"
# Elements that hold what a resource is about.
CODE_ELEMENTS = ("code", "medicationCodeableConcept", "category", "type", "reasonCode")


@dataclass(frozen=True)
class Finding:
    """What one rule says: categories, security labels, and whether they replace the type's default."""

    categories: frozenset[str]
    security: frozenset[str]
    replace: bool


@dataclass(frozen=True)
class Rules:
    types: dict[str, frozenset[str]]
    category_security: dict[str, frozenset[str]]
    restricted: frozenset[str]
    codes: dict[tuple[str, str | None], Finding]
    questionnaires: dict[str, frozenset[str]]
    medicine_words: dict[str, Finding]
    sources: dict[str, frozenset[str]]


def _finding(entry: dict[str, Any]) -> Finding:
    return Finding(frozenset(entry.get("categories", ())), frozenset(entry.get("security", ())), bool(entry.get("replace")))


@lru_cache(maxsize=1)
def load_rules(path: Path = RULES_FILE) -> Rules:
    """Parse the rules file once."""
    doc = yaml.safe_load(path.read_text())
    return Rules(
        types={k: frozenset(v) for k, v in doc["types"].items()},
        category_security={k: frozenset(v) for k, v in doc["category_security"].items()},
        restricted=frozenset(doc["restricted_categories"]),
        codes={(e["system"], e.get("code")): _finding(e) for e in doc["codes"]},
        questionnaires={k: frozenset(v) for k, v in doc["questionnaires"].items()},
        medicine_words={k: _finding(v) for k, v in doc["medicine_words"].items()},
        sources={k: frozenset(v) for k, v in doc["sources"].items()},
    )


def _concepts(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for element in CODE_ELEMENTS:
        value = resource.get(element)
        for concept in value if isinstance(value, list) else [value]:
            if isinstance(concept, dict):
                yield concept


def _findings(resource: dict[str, Any], rules: Rules) -> Iterator[Finding]:
    for concept in _concepts(resource):
        codings = concept.get("coding", []) if "coding" in concept or "text" in concept else [concept]
        for coding in codings:
            system, code = coding.get("system"), coding.get("code")
            finding = rules.codes.get((system, code)) or rules.codes.get((system, None))
            if finding is not None:
                yield finding
        if resource["resourceType"].startswith("Medication"):
            words = " ".join([concept.get("text", "")] + [c.get("display", "") for c in codings]).lower()
            yield from (f for word, f in rules.medicine_words.items() if word in words)
    questionnaire = resource.get("questionnaire")
    if isinstance(questionnaire, str) and questionnaire in rules.questionnaires:
        yield Finding(rules.questionnaires[questionnaire], frozenset(), True)


def _source(resource: dict[str, Any], source: str | None) -> str | None:
    if source:
        return source
    origin = resource.get("meta", {}).get("source", "")
    return origin.removeprefix(SOURCE_PREFIX).split("/", 1)[0] if origin.startswith(SOURCE_PREFIX) else None


def labels_for(resource: dict[str, Any], source: str | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """(data categories, security label codes) the rules give this resource."""
    rules = load_rules()
    findings = list(_findings(resource, rules))
    categories = set().union(*(f.categories for f in findings)) if findings else set()
    security = set().union(*(f.security for f in findings)) if findings else set()
    if not any(f.replace for f in findings):
        categories |= rules.types.get(resource["resourceType"], frozenset())
    if resource["resourceType"] == "Patient" and (resource.get("address") or resource.get("telecom")):
        categories.add("contact-details")
    origin = _source(resource, source)
    if origin and categories:  # person data only: directory resources carry no category
        categories |= rules.sources.get(origin, frozenset())
    for category in categories:
        security |= rules.category_security.get(category, frozenset())
    if categories & rules.restricted:
        security.add("R")
    return frozenset(categories), frozenset(security)


def label_resource(resource: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Add the categories (``meta.tag``) and security labels (``meta.security``) the rules give."""
    categories, security = labels_for(resource, source)
    meta = resource.setdefault("meta", {})
    tags = meta.setdefault("tag", [])
    have_tags = {(t.get("system"), t.get("code")) for t in tags}
    tags.extend({"system": CATEGORY_SYSTEM, "code": c} for c in sorted(categories) if (CATEGORY_SYSTEM, c) not in have_tags)
    labels = meta.setdefault("security", [])
    have = {l.get("code") for l in labels}
    for code in sorted(security - have):
        system = CONFIDENTIALITY_SYSTEM if code in CONFIDENTIALITY_CODES else SENSITIVITY_SYSTEM
        labels.append({"system": system, "code": code})
    if not any(l.get("system") == CONFIDENTIALITY_SYSTEM for l in labels):
        labels.append({"system": CONFIDENTIALITY_SYSTEM, "code": "N"})
    if not tags:
        del meta["tag"]
    return resource
