"""Consent decisions from readable cases: tests/consent_cases/*.json.

Each case holds ``consents``, optionally ``agreements``, a ``request`` and what to ``expect``:
``decision``; and, when given, ``consents``, ``agreements``, ``flags`` (exact lists), ``until``, ``redact``
(the merged redact obligation, missing kinds meaning none) and ``reasons_contain``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consent import decide, decide_many

CASES = sorted((Path(__file__).parent / "consent_cases").glob("*.json"))
KINDS = ("security", "categories", "codes", "classes")


def merged_redaction(decision: dict[str, Any]) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for obligation in decision["obligations"]:
        for kind in KINDS:
            merged[kind] += obligation["redact"][kind]
    return merged


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_consent_case(path: Path) -> None:
    case = json.loads(path.read_text())
    decision = decide(case["request"], case["consents"], case.get("agreements"))
    expect = case["expect"]
    assert set(decision) == {"decision", "reasons", "agreements", "consents", "flags", "obligations", "until"}
    assert decision["decision"] == expect["decision"], decision["reasons"]
    for key in ("consents", "agreements", "flags", "until"):
        if key in expect:
            assert decision[key] == expect[key], decision["reasons"]
    if "redact" in expect:
        assert merged_redaction(decision) == {kind: expect["redact"].get(kind, []) for kind in KINDS}
    for text in expect.get("reasons_contain", []):
        assert any(text in reason for reason in decision["reasons"]), decision["reasons"]


def test_cases_exist_for_every_design_example() -> None:
    names = {p.stem for p in CASES}
    assert {
        "two-targeted-opt-ins-facility",
        "two-targeted-opt-ins-advocate",
        "targeted-opt-in-beats-blanket-opt-out",
        "blanket-opt-out-beats-blanket-opt-in",
        "deny-naming-facility-beats-permit-naming-it",
    } <= names


def test_decide_many_keeps_order_and_skips_agreements_without_the_key() -> None:
    cases = [json.loads(p.read_text()) for p in CASES]
    items = [{"consents": c["consents"], "request": c["request"]} for c in cases if "agreements" not in c]
    decisions = decide_many(items)
    assert [d["decision"] for d in decisions] == [decide(i["request"], i["consents"])["decision"] for i in items]
    assert all(d["agreements"] == [] for d in decisions)


def test_decide_many_refuses_an_item_without_a_request() -> None:
    [decision] = decide_many([{"consents": []}])
    assert decision["decision"] == "deny"
    assert "request" in decision["reasons"][0]


def test_agreements_given_but_no_holder_is_refused() -> None:
    case = json.loads((Path(__file__).parent / "consent_cases" / "agreement-and-consent-both-permit.json").read_text())
    request = {k: v for k, v in case["request"].items() if k != "holder"}
    decision = decide(request, case["consents"], case["agreements"])
    assert decision["decision"] == "deny"
    assert any("holder required" in r for r in decision["reasons"])


def test_bad_at_is_refused_with_a_reason() -> None:
    decision = decide({"patient": [], "actor": [], "purpose": "TREAT", "at": "next tuesday"}, [])
    assert decision["decision"] == "deny"
    assert "'at'" in decision["reasons"][0]


def test_missing_at_means_now() -> None:
    consent = {
        "resourceType": "Consent", "id": "always", "status": "active",
        "patient": {"reference": "Patient/p-ross"},
        "provision": {"type": "permit", "period": {"start": "2000-01-01"}},
    }
    request = {"patient": [{"system": "reference", "value": "Patient/p-ross"}], "actor": [], "purpose": "TREAT"}
    assert decide(request, [consent])["decision"] == "permit"
    assert decide(request, [{**consent, "provision": {"type": "permit", "period": {"end": "2001-01-01"}}}])["decision"] == "no-consent"
